/* vmascope record: the final snapshot of a program that ends by itself.
 *
 * Loaded with LD_PRELOAD into the command that `vmascope record -- CMD` starts. Its
 * constructor registers an atexit handler (registered first, it runs after the
 * program's own) in the process that loaded it, and removes VMASCOPE_EXIT_DIR from the
 * environment so that programs the target starts are not hooked. At exit() the handler
 * writes the pid to DIR/req and waits (at most 60 s) for one byte on DIR/ack: the
 * recorder takes the snapshot in between, while the address space is still whole.
 * A program that ends with _exit() or a signal is not seen here; the recorder says so.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char req_path[PATH_MAX], ack_path[PATH_MAX];
static pid_t hooked_pid;

static void at_exit(void)
{
	char msg[32];
	int w, r, n;
	struct pollfd p;

	if (getpid() != hooked_pid)
		return; /* a fork child (the atexit list is inherited) */
	w = open(req_path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	if (w < 0)
		return;
	n = snprintf(msg, sizeof(msg), "%d\n", (int)hooked_pid);
	r = open(ack_path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (r < 0 || write(w, msg, n) != n) {
		close(w);
		if (r >= 0)
			close(r);
		return;
	}
	close(w);
	p.fd = r;
	p.events = POLLIN;
	for (int waited = 0; waited < 600; waited++) {
		char c;
		if (poll(&p, 1, 100) > 0 && read(r, &c, 1) == 1)
			break;
	}
	close(r);
}

__attribute__((constructor)) static void init(void)
{
	const char *dir = getenv("VMASCOPE_EXIT_DIR");

	if (!dir || strlen(dir) > PATH_MAX - 8)
		return;
	snprintf(req_path, sizeof(req_path), "%s/req", dir);
	snprintf(ack_path, sizeof(ack_path), "%s/ack", dir);
	hooked_pid = getpid();
	unsetenv("VMASCOPE_EXIT_DIR");
	atexit(at_exit);
}

/* vmascope record: snapshots of the target at the points only it can tell.
 *
 * Loaded with LD_PRELOAD into the command that `vmascope record -- CMD` starts
 * (VMASCOPE_EXIT_DIR names the recorder's folder). In the first program image the
 * constructor notes the target's pid in VMASCOPE_TARGET. When the target execs another
 * program (a wrapper script, a launcher), the new image's constructor finds its own pid
 * there and asks for a new first snapshot ("e PID"): the recording starts again from
 * the new program. In every image of the target an atexit handler (registered first,
 * it runs after the program's own) asks for the last snapshot at exit() ("x PID").
 * A request is a line on DIR/req; the hook then waits (at most 60 s) for one byte on
 * DIR/ack while the recorder reads /proc. Other processes (the target's children)
 * remove both variables and are not hooked. A program that ends with _exit() or a
 * signal is not seen here; the recorder says so.
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

static void ask(char what)
{
	char msg[32];
	int w, r, n;
	struct pollfd p;

	w = open(req_path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	if (w < 0)
		return;
	n = snprintf(msg, sizeof(msg), "%c %d\n", what, (int)hooked_pid);
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

static void at_exit(void)
{
	if (getpid() == hooked_pid) /* not a fork child (the atexit list is inherited) */
		ask('x');
}

__attribute__((constructor)) static void init(void)
{
	const char *dir = getenv("VMASCOPE_EXIT_DIR");
	const char *target = getenv("VMASCOPE_TARGET");
	char pid[24];

	if (!dir || strlen(dir) > PATH_MAX - 8)
		return;
	if (target && atol(target) != (long)getpid()) {
		unsetenv("VMASCOPE_EXIT_DIR"); /* a child of the target: not recorded */
		unsetenv("VMASCOPE_TARGET");
		return;
	}
	snprintf(req_path, sizeof(req_path), "%s/req", dir);
	snprintf(ack_path, sizeof(ack_path), "%s/ack", dir);
	hooked_pid = getpid();
	if (target) {
		ask('e'); /* the target exec'd: a new first snapshot */
	} else {
		snprintf(pid, sizeof(pid), "%d", (int)hooked_pid);
		setenv("VMASCOPE_TARGET", pid, 1);
	}
	atexit(at_exit);
}

/* Placeholder: replaced by the real parser. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_fastparse", NULL, -1, NULL};
PyMODINIT_FUNC PyInit__fastparse(void) { return PyModule_Create(&mod); }

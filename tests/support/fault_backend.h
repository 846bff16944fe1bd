/* fault_backend: a test-only backend ("fault[:key=value,...]", see fault_backend.c) that wraps
 * the cpu backend and injects out-of-memory, device errors, memory pressure and several devices.
 * Linked into test binaries only. */
#ifndef SQ_TEST_FAULT_BACKEND_H
#define SQ_TEST_FAULT_BACKEND_H

/* Registers "fault" with the engine's backend registry (main, before devices are opened).
 * Returns 0 or a negative SQ_E* code. */
int sq_fault_backend_register(void);

#endif

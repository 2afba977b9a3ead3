/* A QEMU TCG plugin that counts the guest instructions a qemu-user process executes, all
 * threads together, and writes the total to the file named by out=PATH at exit. For
 * scripts/bench.sh's ARM rows: instruction counts are exact and repeatable, seconds
 * under emulation say nothing about a Raspberry Pi.
 *
 * Written against QEMU 7.2's plugin API (version 1; Debian bookworm's qemu-user), with
 * the few declarations it needs spelled out: the header is not packaged. One counter per
 * vCPU (a guest thread is one), summed at exit, so no update is lost between threads.
 *
 *   gcc -shared -fPIC -O2 -o libinsn.so qemu-insn-count.c
 *   qemu-arm -plugin ./libinsn.so,out=count.txt PROGRAM ARGS... */
#include <stdint.h>
#include <stdio.h>
#include <stddef.h>
typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t;
struct qemu_plugin_tb;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS };
typedef void (*tb_trans_cb)(qemu_plugin_id_t, struct qemu_plugin_tb *);
typedef void (*udata_cb)(unsigned int vcpu_index, void *userdata);
typedef void (*atexit_cb)(qemu_plugin_id_t, void *);
extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, tb_trans_cb);
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
extern void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *, udata_cb, enum qemu_plugin_cb_flags, void *);
extern void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, atexit_cb, void *);
__attribute__((visibility("default"))) int qemu_plugin_version = 1;
#define MAX_VCPUS 4096
static uint64_t counts[MAX_VCPUS];
static void exec(unsigned int vcpu, void *n) { counts[vcpu % MAX_VCPUS] += (uintptr_t)n; }
static void trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    qemu_plugin_register_vcpu_tb_exec_cb(tb, exec, QEMU_PLUGIN_CB_NO_REGS, (void *)(uintptr_t)qemu_plugin_tb_n_insns(tb));
}
static const char *out_path;
static void done(qemu_plugin_id_t id, void *p) {
    uint64_t total = 0;
    for (int i = 0; i < MAX_VCPUS; i++) total += counts[i];
    FILE *f = out_path ? fopen(out_path, "w") : stderr;
    if (f) { fprintf(f, "%llu\n", (unsigned long long)total); if (f != stderr) fclose(f); }
}
__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
    for (int i = 0; i < argc; i++) if (argv[i][0] == 'o' && argv[i][1] == 'u' && argv[i][2] == 't' && argv[i][3] == '=') out_path = argv[i] + 4;
    qemu_plugin_register_vcpu_tb_trans_cb(id, trans);
    qemu_plugin_register_atexit_cb(id, done, NULL);
    return 0;
}

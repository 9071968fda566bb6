/* LD_PRELOAD shim: the CPU as an AVX2-only one (Zen 3's ISA: AVX2/FMA, no AVX-512, no VNNI,
 * no BF16, no AMX) to every library that asks CPUID, so torch (cpuinfo, oneDNN, fbgemm) and
 * ONNX Runtime (MLAS) take the AVX2 kernels they would take on such a machine.
 *
 * Why by hand: no library masks CPUID for all of them at once (ATEN_CPU_CAPABILITY and
 * ONEDNN_MAX_CPU_ISA cover two of the four; MLAS has no switch). Linux's CPUID faulting
 * (arch_prctl ARCH_SET_CPUID, flag cpuid_fault) traps every CPUID into SIGSEGV; the handler
 * runs the real CPUID, clears the bits, and steps over the instruction. Benchmarks only:
 * a process that installs its own SIGSEGV handler (pytest's faulthandler) would crash, so only
 * Python processes are masked (gcc's cc1plus, run by torch.compile, has such a handler).
 * Built and preloaded by benchmarks/cpu_isa.py (bench.py --isa avx2).
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static int set_cpuid(int enabled) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, enabled); }

static void mask(uint32_t leaf, uint32_t sub, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d) {
  if (leaf == 7 && sub == 0) {
    /* EBX: AVX512F DQ IFMA PF ER CD BW VL */
    *b &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) |
            (1u << 30) | (1u << 31));
    /* ECX: AVX512_VBMI, VBMI2, GFNI, VNNI, BITALG, VPOPCNTDQ */
    *c &= ~((1u << 1) | (1u << 6) | (1u << 8) | (1u << 11) | (1u << 12) | (1u << 14));
    /* EDX: 4VNNIW 4FMAPS VP2INTERSECT AMX-BF16 AVX512_FP16 AMX-TILE AMX-INT8 */
    *d &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) |
            (1u << 25));
  } else if (leaf == 7 && sub == 1) {
    *a &= ~((1u << 4) | (1u << 5) | (1u << 23)); /* AVX-VNNI, AVX512_BF16, AVX-IFMA */
  }
}

static void on_segv(int sig, siginfo_t *info, void *raw) {
  ucontext_t *uc = raw;
  greg_t *r = uc->uc_mcontext.gregs;
  const unsigned char *ip = (const unsigned char *)r[REG_RIP];
  if (ip[0] != 0x0F || ip[1] != 0xA2) { /* a real crash: default action */
    signal(SIGSEGV, SIG_DFL);
    raise(SIGSEGV);
    return;
  }
  uint32_t leaf = (uint32_t)r[REG_RAX], sub = (uint32_t)r[REG_RCX], a, b, c, d;
  set_cpuid(1);
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(leaf), "c"(sub));
  set_cpuid(0);
  mask(leaf, sub, &a, &b, &c, &d);
  r[REG_RAX] = a, r[REG_RBX] = b, r[REG_RCX] = c, r[REG_RDX] = d;
  r[REG_RIP] += 2;
}

static int is_python(void) {
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return 0;
  exe[n] = 0;
  const char *base = strrchr(exe, '/');
  return strstr(base ? base + 1 : exe, "python") != NULL;
}

__attribute__((constructor)) static void start(void) {
  if (!is_python()) return;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_segv;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigaction(SIGSEGV, &sa, NULL);
  if (set_cpuid(0) != 0) {
    perror("avx2_cpuid: CPUID faulting (arch_prctl ARCH_SET_CPUID) unavailable");
    exit(3);
  }
}

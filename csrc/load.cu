// CUDA load kernels for `phprof calibrate`: a compute burner and an idle spin, switched on
// the GPU's own nanosecond timer (%globaltimer), so a schedule of square waves and steps runs
// with microsecond edges whatever the host does meanwhile.
//
// A plain C ABI, loaded with ctypes (phprof/tracing/gpuload.py); built by setup.py when nvcc
// is present, and the package installs without it.
#include <cuda_runtime.h>
#include <stdint.h>

namespace {

__device__ __forceinline__ long long global_ns() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return static_cast<long long>(t);
}

// Runs segment k until ends_ns[k] (globaltimer ns): on[k] burns FMAs on every thread, else
// every thread sleeps in short naps (the "idle spin": the kernel stays resident, the ALUs rest).
// Block 0's first thread stamps the instant it first saw each segment into marks_ns[k].
__global__ void schedule_kernel(const long long *ends_ns, const int *on, int n, long long *marks_ns, float *sink) {
    float x = threadIdx.x * 1e-3f, y = 1.0f;
    int k = 0;
    bool leader = blockIdx.x == 0 && threadIdx.x == 0;
    if (leader) marks_ns[0] = global_ns();
    while (k < n) {
        long long now = global_ns();
        while (k < n && now >= ends_ns[k]) {
            ++k;
            if (leader && k < n) marks_ns[k] = now;
        }
        if (k >= n) break;
        if (on[k]) {
#pragma unroll 16
            for (int i = 0; i < 512; ++i) {
                x = fmaf(x, 0.9999999f, y);
                y = fmaf(y, 0.9999999f, x);
            }
        } else {
            __nanosleep(2000);
        }
    }
    if (x == 1234.5f) sink[0] = x + y;  // keeps the burner from being optimised away
}

__global__ void clock_kernel(long long *out) { *out = global_ns(); }

int fail(cudaError_t e) { return e == cudaSuccess ? 0 : static_cast<int>(e); }

}  // namespace

extern "C" {

// The GPU's timer now (ns), read by a one-thread kernel; 0 on success, else a cudaError_t.
// The device word is allocated once per device (by the first call, which the caller does not
// time), so that a timed call is the launch and the copy back only.
int phprof_load_clock(int device, long long *gpu_ns) {
    static long long *words[64] = {};
    int rc;
    if (device < 0 || device >= 64) return static_cast<int>(cudaErrorInvalidDevice);
    if ((rc = fail(cudaSetDevice(device)))) return rc;
    if (words[device] == nullptr && (rc = fail(cudaMalloc(&words[device], sizeof(long long))))) return rc;
    clock_kernel<<<1, 1>>>(words[device]);
    return fail(cudaMemcpy(gpu_ns, words[device], sizeof(long long), cudaMemcpyDeviceToHost));
}

// Runs n segments ending at ends_ns[k] (GPU timer ns), on[k] busy or idle, and blocks until
// the last ends; marks_ns[k] gets the instant segment k began as the GPU saw it.
// blocks <= 0: four per multiprocessor. Returns 0, else a cudaError_t.
int phprof_load_run(int device, const long long *ends_ns, const int *on, int n, long long *marks_ns, int blocks,
                    int threads) {
    int rc, sms = 0;
    if ((rc = fail(cudaSetDevice(device)))) return rc;
    if (blocks <= 0) {
        if ((rc = fail(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device)))) return rc;
        blocks = 4 * sms;
    }
    long long *d_ends = nullptr, *d_marks = nullptr;
    int *d_on = nullptr;
    float *d_sink = nullptr;
    size_t bytes = sizeof(long long) * static_cast<size_t>(n);
    if ((rc = fail(cudaMalloc(&d_ends, bytes))) || (rc = fail(cudaMalloc(&d_marks, bytes))) ||
        (rc = fail(cudaMalloc(&d_on, sizeof(int) * n))) || (rc = fail(cudaMalloc(&d_sink, sizeof(float)))))
        goto done;
    if ((rc = fail(cudaMemcpy(d_ends, ends_ns, bytes, cudaMemcpyHostToDevice))) ||
        (rc = fail(cudaMemcpy(d_on, on, sizeof(int) * n, cudaMemcpyHostToDevice))))
        goto done;
    schedule_kernel<<<blocks, threads>>>(d_ends, d_on, n, d_marks, d_sink);
    if ((rc = fail(cudaGetLastError())) || (rc = fail(cudaDeviceSynchronize()))) goto done;
    rc = fail(cudaMemcpy(marks_ns, d_marks, bytes, cudaMemcpyDeviceToHost));
done:
    cudaFree(d_ends);
    cudaFree(d_marks);
    cudaFree(d_on);
    cudaFree(d_sink);
    return rc;
}

const char *phprof_load_error(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }
}

// phprof._sampler: the native power sampler.
//
// One std::thread per Sampler polls, at a fixed rate or as fast as the
// driver answers, a set of channels:
//   - NVML fields of selected GPUs: the total-energy counter (mJ), the
//     instant power field (mW) and the 1 s average power field (mW);
//   - counter files (Linux powercap energy_uj), read with pread().
// Every reading is bracketed by CLOCK_REALTIME taken just before and just
// after the call (the clock torch.profiler/Kineto stamps events with) and
// written to a preallocated single-producer/single-consumer ring (address
// space reserved up front, its pages resident only while they hold readings
// not yet drained: a drain hands the pages it emptied back). Python
// drains the ring in bulk as bytes (one record layout, described by
// READING_LAYOUT so numpy can view it); the thread never touches Python
// objects, so it runs outside the GIL.
//
// NVML is dlopen'ed at run time: the extension builds and imports on a
// machine with no driver and no CUDA toolkit. The library path is chosen by
// the Python layer (PHPROF_NVML_LIB or libnvidia-ml.so.1).
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "nvml_api.h"

namespace {

// ---------------------------------------------------------------------------
// The record every channel produces. Its layout is exported to Python.
struct Reading {
    int64_t t_before_ns;  // CLOCK_REALTIME just before the call
    int64_t t_after_ns;   // CLOCK_REALTIME just after the call
    int64_t value;        // mJ (energy), mW (power), or the file's integer (uJ for RAPL)
    uint32_t seq;         // poll number: readings of one poll share it
    uint16_t channel;     // see Sampler.channels
    uint16_t status;      // 0 = ok; NVML return code, or errno for files
};
static_assert(sizeof(Reading) == 32, "Reading must stay 32 bytes");

enum Field { FIELD_ENERGY = 0, FIELD_POWER_INSTANT = 1, FIELD_POWER_AVERAGE = 2, N_FIELDS = 3 };
const char *const kFieldNames[N_FIELDS] = {"energy", "power_instant", "power_average"};

inline int64_t realtime_ns() {
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return int64_t(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

inline int64_t thread_cpu_ns() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return int64_t(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

// ---------------------------------------------------------------------------
// NVML, loaded once per library path and never unloaded (unloading a driver
// library while other code may hold its handles is not worth the risk).
struct NvmlLib {
    nvmlInit_v2_fn init = nullptr;
    nvmlShutdown_fn shutdown = nullptr;
    nvmlErrorString_fn error_string = nullptr;
    nvmlSystemGetDriverVersion_fn driver_version = nullptr;
    nvmlDeviceGetCount_v2_fn device_count = nullptr;
    nvmlDeviceGetHandleByIndex_v2_fn handle_by_index = nullptr;
    nvmlDeviceGetName_fn device_name = nullptr;
    nvmlDeviceGetUUID_fn device_uuid = nullptr;
    nvmlDeviceGetPowerManagementLimit_fn power_limit = nullptr;  // optional: the board's power cap
    nvmlDeviceGetTotalEnergyConsumption_fn total_energy = nullptr;
    nvmlDeviceGetFieldValues_fn field_values = nullptr;
    nvmlDeviceGetPciInfo_v3_fn pci_info = nullptr;  // optional: where the board sits (to match CUDA's devices)

    std::string describe(nvmlReturn_t rc) const {
        const char *s = error_string ? error_string(rc) : nullptr;
        return std::string(s ? s : "unknown error") + " (NVML code " + std::to_string(rc) + ")";
    }
};

PyObject *NvmlError;        // RuntimeError subclass, .code = NVML return code
PyObject *NvmlUnavailable;  // OSError subclass: the library cannot be loaded

// Returns the loaded library, or nullptr with a Python exception set.
NvmlLib *load_nvml(const std::string &path) {
    static std::map<std::string, NvmlLib *> *loaded = new std::map<std::string, NvmlLib *>();
    auto it = loaded->find(path);
    if (it != loaded->end()) return it->second;

    void *h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *err = dlerror();
        PyErr_Format(NvmlUnavailable, "cannot load the NVML library '%s': %s", path.c_str(),
                     err ? err : "dlopen failed");
        return nullptr;
    }
    auto *lib = new NvmlLib();
    auto sym = [h](const char *name) { return dlsym(h, name); };
    lib->init = reinterpret_cast<nvmlInit_v2_fn>(sym("nvmlInit_v2"));
    lib->shutdown = reinterpret_cast<nvmlShutdown_fn>(sym("nvmlShutdown"));
    lib->error_string = reinterpret_cast<nvmlErrorString_fn>(sym("nvmlErrorString"));
    lib->driver_version = reinterpret_cast<nvmlSystemGetDriverVersion_fn>(sym("nvmlSystemGetDriverVersion"));
    lib->device_count = reinterpret_cast<nvmlDeviceGetCount_v2_fn>(sym("nvmlDeviceGetCount_v2"));
    lib->handle_by_index = reinterpret_cast<nvmlDeviceGetHandleByIndex_v2_fn>(sym("nvmlDeviceGetHandleByIndex_v2"));
    lib->device_name = reinterpret_cast<nvmlDeviceGetName_fn>(sym("nvmlDeviceGetName"));
    lib->device_uuid = reinterpret_cast<nvmlDeviceGetUUID_fn>(sym("nvmlDeviceGetUUID"));
    lib->power_limit =
        reinterpret_cast<nvmlDeviceGetPowerManagementLimit_fn>(sym("nvmlDeviceGetPowerManagementLimit"));
    lib->total_energy = reinterpret_cast<nvmlDeviceGetTotalEnergyConsumption_fn>(sym("nvmlDeviceGetTotalEnergyConsumption"));
    lib->field_values = reinterpret_cast<nvmlDeviceGetFieldValues_fn>(sym("nvmlDeviceGetFieldValues"));
    lib->pci_info = reinterpret_cast<nvmlDeviceGetPciInfo_v3_fn>(sym("nvmlDeviceGetPciInfo_v3"));
    const char *missing = !lib->init ? "nvmlInit_v2"
                        : !lib->shutdown ? "nvmlShutdown"
                        : !lib->device_count ? "nvmlDeviceGetCount_v2"
                        : !lib->handle_by_index ? "nvmlDeviceGetHandleByIndex_v2"
                        : nullptr;
    if (missing) {
        PyErr_Format(NvmlUnavailable, "'%s' is not a usable NVML library: it has no %s", path.c_str(), missing);
        delete lib;
        return nullptr;  // the handle stays open; harmless
    }
    (*loaded)[path] = lib;
    return lib;
}

void set_nvml_error(const NvmlLib *lib, const char *what, nvmlReturn_t rc) {
    std::string msg = std::string(what) + " failed: " + lib->describe(rc);
    PyObject *args = Py_BuildValue("(s)", msg.c_str());
    if (!args) return;
    PyObject *exc = PyObject_Call(NvmlError, args, nullptr);
    Py_DECREF(args);
    if (!exc) return;
    PyObject *code = PyLong_FromLong(rc);
    if (code) {
        PyObject_SetAttrString(exc, "code", code);
        Py_DECREF(code);
    }
    PyErr_SetObject(NvmlError, exc);
    Py_DECREF(exc);
}

// nvmlInit_v2 + the device count, without holding the GIL (a driver can take
// seconds to initialise); on failure sets a Python exception.
bool nvml_init(NvmlLib *lib, unsigned *count) {
    nvmlReturn_t init_rc, count_rc = NVML_SUCCESS;
    Py_BEGIN_ALLOW_THREADS
    init_rc = lib->init();
    if (init_rc == NVML_SUCCESS) {
        count_rc = lib->device_count(count);
        if (count_rc != NVML_SUCCESS) lib->shutdown();
    }
    Py_END_ALLOW_THREADS
    if (init_rc != NVML_SUCCESS) {
        set_nvml_error(lib, "nvmlInit_v2", init_rc);
        return false;
    }
    if (count_rc != NVML_SUCCESS) {
        set_nvml_error(lib, "nvmlDeviceGetCount_v2", count_rc);
        return false;
    }
    return true;
}

int64_t field_value_as_int(const nvmlFieldValue_t &fv) {
    switch (fv.valueType) {
        case NVML_VALUE_TYPE_DOUBLE: return int64_t(std::llround(fv.value.dVal));
        case NVML_VALUE_TYPE_UNSIGNED_INT: return int64_t(fv.value.uiVal);
        case NVML_VALUE_TYPE_UNSIGNED_LONG: return int64_t(fv.value.ulVal);
        case NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: return int64_t(fv.value.ullVal);
        case NVML_VALUE_TYPE_SIGNED_LONG_LONG: return int64_t(fv.value.sllVal);
        case NVML_VALUE_TYPE_SIGNED_INT: return int64_t(fv.value.siVal);
        case NVML_VALUE_TYPE_UNSIGNED_SHORT: return int64_t(fv.value.usVal);
    }
    return 0;
}

// One NVML read of one field. Returns the NVML status; *value is set on success.
nvmlReturn_t read_field(const NvmlLib *lib, nvmlDevice_t dev, int field, int64_t *value) {
    if (field == FIELD_ENERGY) {
        if (!lib->total_energy) return NVML_ERROR_FUNCTION_NOT_FOUND;
        unsigned long long mj = 0;
        nvmlReturn_t rc = lib->total_energy(dev, &mj);
        if (rc == NVML_SUCCESS) *value = int64_t(mj);
        return rc;
    }
    if (!lib->field_values) return NVML_ERROR_FUNCTION_NOT_FOUND;
    nvmlFieldValue_t fv;
    std::memset(&fv, 0, sizeof fv);
    fv.fieldId = field == FIELD_POWER_INSTANT ? NVML_FI_DEV_POWER_INSTANT : NVML_FI_DEV_POWER_AVERAGE;
    fv.scopeId = 0;  // the whole GPU
    nvmlReturn_t rc = lib->field_values(dev, 1, &fv);
    if (rc != NVML_SUCCESS) return rc;
    if (fv.nvmlReturn != NVML_SUCCESS) return fv.nvmlReturn;
    *value = field_value_as_int(fv);
    return NVML_SUCCESS;
}

// Reads an unsigned decimal integer file (powercap energy_uj) from an open fd.
// Returns 0 or an errno value.
int read_counter_file(int fd, int64_t *value) {
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n < 0) return errno ? errno : EIO;
    buf[n] = '\0';
    char *end = nullptr;
    errno = 0;
    unsigned long long v = std::strtoull(buf, &end, 10);
    if (errno || end == buf) return EINVAL;
    *value = int64_t(v);
    return 0;
}

// ---------------------------------------------------------------------------
struct Channel {
    enum Kind { NVML_FIELD, FILE_COUNTER } kind;
    nvmlDevice_t device = nullptr;  // NVML_FIELD
    int field = 0;                  // NVML_FIELD
    int fd = -1;                    // FILE_COUNTER
    // changed-only bookkeeping (sampling thread only)
    bool enabled = true;
    bool has_last = false;
    int64_t last_value = 0;
    uint16_t last_status = 0;
    bool has_pending = false;
    Reading pending{};
};

struct Core {
    NvmlLib *lib = nullptr;           // null when no GPU channel
    std::vector<Channel> channels;
    int64_t interval_ns = 1000000;    // 0 = as fast as the driver answers
    bool changed_only = false;

    // ring (single producer: the thread; single consumer: drain under drain_mu): an anonymous
    // mapping, so that only its pages written since their last drain are resident (a 2**20-reading
    // ring is 32 MiB of address space, a few hundred kB of memory between drains 30 s apart)
    Reading *ring = nullptr;
    size_t ring_bytes = 0;
    uint64_t mask = 0;
    std::atomic<uint64_t> head{0};
    std::atomic<uint64_t> tail{0};
    std::mutex drain_mu;

    std::thread thread;
    std::mutex life_mu;  // serialises start() and stop() from any number of threads
    std::atomic<bool> running{false};
    std::atomic<bool> stop_requested{false};
    std::mutex wake_mu;
    std::condition_variable wake;
    bool first_poll_done = false;  // guarded by wake_mu

    // statistics (written by the thread, read while running: atomics)
    std::atomic<uint64_t> polls{0};
    std::atomic<uint64_t> stored{0};
    std::atomic<uint64_t> dropped{0};
    std::atomic<uint64_t> late{0};  // polls that started after their deadline
    std::atomic<int64_t> cpu_ns_total{0};  // CPU time of finished runs
    std::atomic<int64_t> cpu_ns_run{0};    // CPU time of the current run so far
    uint32_t seq = 0;  // wraps after 2**32 polls (~50 days at 1 kHz)

    void push(const Reading &r) {
        uint64_t h = head.load(std::memory_order_relaxed);
        if (h - tail.load(std::memory_order_acquire) > mask) {
            dropped.fetch_add(1, std::memory_order_relaxed);
            return;
        }
        ring[h & mask] = r;
        head.store(h + 1, std::memory_order_release);
        stored.fetch_add(1, std::memory_order_relaxed);
    }

    // Keeps every reading, or, in changed-only mode, each changed reading
    // together with the last unchanged one before it, so every change stays
    // bracketed by two real readings.
    void keep(Channel &c, const Reading &r) {
        if (!changed_only) {
            push(r);
            return;
        }
        if (c.has_last && r.value == c.last_value && r.status == c.last_status) {
            c.pending = r;
            c.has_pending = true;
            return;
        }
        if (c.has_pending) push(c.pending);
        push(r);
        c.has_last = true;
        c.last_value = r.value;
        c.last_status = r.status;
        c.has_pending = false;
    }

    void poll_once() {
        const uint32_t s = seq++;
        for (size_t i = 0; i < channels.size(); ++i) {
            Channel &c = channels[i];
            if (!c.enabled) continue;
            Reading r{};
            r.seq = s;
            r.channel = uint16_t(i);
            int64_t v = 0;
            int status;
            r.t_before_ns = realtime_ns();
            if (c.kind == Channel::NVML_FIELD)
                status = read_field(lib, c.device, c.field, &v);
            else
                status = read_counter_file(c.fd, &v);
            r.t_after_ns = realtime_ns();
            r.value = status == 0 ? v : 0;
            r.status = uint16_t(status > 0xffff ? 0xffff : status);
            keep(c, r);
            // A field the GPU does not have will not appear later: record it
            // once (above) and stop asking.
            if (c.kind == Channel::NVML_FIELD &&
                (status == NVML_ERROR_NOT_SUPPORTED || status == NVML_ERROR_FUNCTION_NOT_FOUND))
                c.enabled = false;
        }
        polls.fetch_add(1, std::memory_order_relaxed);
    }

    void run() {
        pthread_setname_np(pthread_self(), "phprof-sampler");  // visible in top -H, /proc/PID/task
        prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);  // 1 us timer slack: tighter wake-ups
        const int64_t cpu0 = thread_cpu_ns();
        for (Channel &c : channels) {  // each run records every channel's status afresh
            c.enabled = true;
            c.has_last = c.has_pending = false;
        }
        auto next = std::chrono::steady_clock::now();
        const auto interval = std::chrono::nanoseconds(interval_ns);
        poll_once();  // the first reading precedes the caller's work: start() waits for it
        {
            std::lock_guard<std::mutex> lk(wake_mu);
            first_poll_done = true;
        }
        wake.notify_all();
        uint64_t n = 1;
        while (!stop_requested.load(std::memory_order_acquire)) {
            if (interval_ns > 0) {
                next += interval;
                auto now = std::chrono::steady_clock::now();
                if (next <= now) {  // fell behind: do not burst to catch up
                    late.fetch_add(1, std::memory_order_relaxed);
                    next = now;
                } else {
                    std::unique_lock<std::mutex> lk(wake_mu);
                    if (wake.wait_until(lk, next, [this] { return stop_requested.load(std::memory_order_acquire); }))
                        break;
                }
            }
            poll_once();
            if ((++n & 255) == 0) cpu_ns_run.store(thread_cpu_ns() - cpu0, std::memory_order_relaxed);
        }
        poll_once();  // ... and the last one follows it: every run is bracketed by readings
        // The last observation of each value ends the run: keep it.
        for (Channel &c : channels)
            if (c.has_pending) push(c.pending), c.has_pending = false;
        cpu_ns_total.fetch_add(thread_cpu_ns() - cpu0, std::memory_order_relaxed);
        cpu_ns_run.store(0, std::memory_order_relaxed);
    }

    // Starts the thread and returns once it has taken its first poll; false if
    // it was already running. Throws std::system_error if no thread can start.
    bool start();
    // Stops and joins the thread (no-op when not running).
    void stop();

    // Takes every reading not yet drained, as a bytes object (GIL held).
    PyObject *drain() {
        std::lock_guard<std::mutex> lk(drain_mu);
        const uint64_t t = tail.load(std::memory_order_relaxed);
        const uint64_t h = head.load(std::memory_order_acquire);
        const size_t n = size_t(h - t);
        PyObject *out = PyBytes_FromStringAndSize(nullptr, Py_ssize_t(n * sizeof(Reading)));
        if (!out) return nullptr;
        char *dst = PyBytes_AS_STRING(out);
        const size_t cap = size_t(mask) + 1;
        const size_t first = size_t(t & mask);
        const size_t n1 = std::min(n, cap - first);
        std::memcpy(dst, &ring[first], n1 * sizeof(Reading));
        if (n > n1) std::memcpy(dst + n1 * sizeof(Reading), &ring[0], (n - n1) * sizeof(Reading));
        // the thread writes only at [h, t + cap): the pages wholly inside what was just copied are free
        release(first, n1);
        if (n > n1) release(0, n - n1);
        tail.store(h, std::memory_order_release);
        return out;
    }

    // Hands back to the system the pages lying wholly inside ring[from, from + n) (they read as
    // zeros, and become resident again when the thread next writes there).
    void release(size_t from, size_t n) {
        static const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
        uintptr_t a = reinterpret_cast<uintptr_t>(ring + from), b = reinterpret_cast<uintptr_t>(ring + from + n);
        a = (a + page - 1) & ~(page - 1);
        b &= ~(page - 1);
        if (b > a) madvise(reinterpret_cast<void *>(a), b - a, MADV_DONTNEED);
    }

    ~Core() {
        if (ring) munmap(ring, ring_bytes);
        for (Channel &c : channels)
            if (c.fd >= 0) close(c.fd);
        if (lib) lib->shutdown();
    }
};

// Samplers whose thread runs; stopped by an exit handler if Python never did.
std::mutex *live_mu = new std::mutex();
std::set<Core *> *live = new std::set<Core *>();

bool Core::start() {
    std::lock_guard<std::mutex> life(life_mu);
    if (running.load()) return false;
    stop_requested.store(false, std::memory_order_release);
    {
        std::lock_guard<std::mutex> lk(wake_mu);
        first_poll_done = false;
    }
    thread = std::thread([this] { run(); });
    running.store(true);
    {
        std::lock_guard<std::mutex> lk(*live_mu);
        live->insert(this);
    }
    std::unique_lock<std::mutex> lk(wake_mu);
    wake.wait(lk, [this] { return first_poll_done; });
    return true;
}

void Core::stop() {
    std::lock_guard<std::mutex> life(life_mu);
    if (!running.load()) return;
    {
        std::lock_guard<std::mutex> lk(wake_mu);
        stop_requested.store(true, std::memory_order_release);
    }
    wake.notify_all();
    thread.join();
    running.store(false);
    std::lock_guard<std::mutex> lk(*live_mu);
    live->erase(this);
}

void stop_live_cores_at_exit() {
    std::vector<Core *> running;
    {
        std::lock_guard<std::mutex> lk(*live_mu);
        running.assign(live->begin(), live->end());
    }
    for (Core *c : running) c->stop();
}

// In a child forked while sampling, the sampling threads do not exist: forget
// them (their std::thread handles and the locks they may have held) so that
// the child neither joins a thread that is not there nor deadlocks.
void forget_threads_in_child() {
    new (live_mu) std::mutex();
    for (Core *c : *live) {
        new (&c->thread) std::thread();
        new (&c->life_mu) std::mutex();
        new (&c->wake_mu) std::mutex();
        new (&c->drain_mu) std::mutex();
        new (&c->wake) std::condition_variable();
        c->running.store(false);
    }
    live->clear();
}

// ---------------------------------------------------------------------------
// Python type

struct SamplerObject {
    PyObject_HEAD
    Core *core;
    PyObject *channels;  // tuple of (kind, device_or_path, field_name)
};

void stop_core(Core *core) {
    Py_BEGIN_ALLOW_THREADS
    core->stop();
    Py_END_ALLOW_THREADS
}

void Sampler_dealloc(SamplerObject *self) {
    if (self->core) {
        stop_core(self->core);
        delete self->core;
    }
    Py_XDECREF(self->channels);
    PyTypeObject *type = Py_TYPE(self);
    type->tp_free(reinterpret_cast<PyObject *>(self));
    Py_DECREF(type);  // instances of heap types own a reference to their type
}

int field_index(PyObject *name) {
    const char *s = PyUnicode_AsUTF8(name);
    if (!s) return -1;
    for (int f = 0; f < N_FIELDS; ++f)
        if (std::strcmp(s, kFieldNames[f]) == 0) return f;
    PyErr_Format(PyExc_ValueError, "unknown NVML field '%s' (known: energy, power_instant, power_average)", s);
    return -1;
}

int Sampler_init(SamplerObject *self, PyObject *args, PyObject *kwds) {
    static const char *kwlist[] = {"library", "gpus", "fields", "files", "interval_ns", "changed_only", "capacity", nullptr};
    const char *library = nullptr;
    PyObject *gpus = nullptr, *fields = nullptr, *files = nullptr;
    long long interval_ns = 1000000;
    int changed_only = 0;
    Py_ssize_t capacity = 1 << 20;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|zOOOLpn", const_cast<char **>(kwlist), &library, &gpus,
                                     &fields, &files, &interval_ns, &changed_only, &capacity))
        return -1;
    if (self->core) {
        PyErr_SetString(PyExc_RuntimeError, "Sampler is already initialised");
        return -1;
    }
    if (interval_ns < 0) {
        PyErr_SetString(PyExc_ValueError, "interval_ns must be >= 0 (0 = as fast as the driver answers)");
        return -1;
    }
    if (capacity < 16 || capacity > (Py_ssize_t(1) << 30)) {
        PyErr_SetString(PyExc_ValueError, "capacity must be between 16 and 2**30 readings");
        return -1;
    }

    std::vector<unsigned> gpu_list;
    std::vector<int> field_list;
    std::vector<std::string> file_list;
    auto as_list = [](PyObject *o, const char *what, auto &&each) -> bool {
        if (!o || o == Py_None) return true;
        PyObject *seq = PySequence_Fast(o, what);
        if (!seq) return false;
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); ++i)
            if (!each(PySequence_Fast_GET_ITEM(seq, i))) {
                Py_DECREF(seq);
                return false;
            }
        Py_DECREF(seq);
        return true;
    };
    bool ok = as_list(gpus, "gpus must be a sequence of GPU indices", [&](PyObject *x) {
        long long g = PyLong_AsLongLong(x);
        if (g == -1 && PyErr_Occurred()) return false;
        if (g < 0 || g > 0xffffffffLL) {
            PyErr_Format(PyExc_ValueError, "GPU index %lld is %s", g, g < 0 ? "negative" : "out of range");
            return false;
        }
        for (unsigned have : gpu_list)
            if (have == unsigned(g)) {
                PyErr_Format(PyExc_ValueError, "GPU %lld is listed twice", g);
                return false;
            }
        gpu_list.push_back(unsigned(g));
        return true;
    });
    ok = ok && as_list(fields, "fields must be a sequence of field names", [&](PyObject *x) {
        int f = field_index(x);
        if (f < 0) return false;
        for (int have : field_list)
            if (have == f) return true;
        field_list.push_back(f);
        return true;
    });
    ok = ok && as_list(files, "files must be a sequence of paths", [&](PyObject *x) {
        PyObject *b = nullptr;
        if (!PyUnicode_FSConverter(x, &b)) return false;
        file_list.emplace_back(PyBytes_AS_STRING(b));
        Py_DECREF(b);
        return true;
    });
    if (!ok) return -1;
    if (!fields || fields == Py_None)
        for (int f = 0; f < N_FIELDS; ++f) field_list.push_back(f);
    if (!gpu_list.empty() && field_list.empty()) {
        PyErr_SetString(PyExc_ValueError, "GPUs were selected but no NVML field");
        return -1;
    }
    if (gpu_list.empty() && file_list.empty()) {
        PyErr_SetString(PyExc_ValueError, "nothing to sample: give gpus and/or files");
        return -1;
    }

    auto core = new Core();
    core->interval_ns = interval_ns;
    core->changed_only = changed_only != 0;
    PyObject *channels = PyList_New(0);
    if (!channels) {
        delete core;
        return -1;
    }
    auto fail = [&]() {
        delete core;  // closes fds, shuts NVML down if it was initialised
        Py_DECREF(channels);
        return -1;
    };
    auto add_channel = [&](PyObject *desc) {
        if (!desc) return false;
        int rc = PyList_Append(channels, desc);
        Py_DECREF(desc);
        return rc == 0;
    };

    if (!gpu_list.empty()) {
        if (!library) {
            PyErr_SetString(PyExc_ValueError, "an NVML library path is needed to sample GPUs");
            return fail();
        }
        NvmlLib *lib = load_nvml(library);
        if (!lib) return fail();
        unsigned count = 0;
        if (!nvml_init(lib, &count)) return fail();
        core->lib = lib;  // from here on ~Core shuts NVML down
        for (unsigned g : gpu_list) {
            if (g >= count) {
                if (count == 0)
                    PyErr_Format(PyExc_ValueError, "GPU %u requested, but NVML (%s) sees no GPU", g, library);
                else
                    PyErr_Format(PyExc_ValueError, "GPU %u requested, but NVML (%s) sees %u GPU%s (indices 0-%u)",
                                 g, library, count, count == 1 ? "" : "s", count - 1);
                return fail();
            }
            nvmlDevice_t dev = nullptr;
            nvmlReturn_t rc = lib->handle_by_index(g, &dev);
            if (rc != NVML_SUCCESS) {
                set_nvml_error(lib, "nvmlDeviceGetHandleByIndex_v2", rc);
                return fail();
            }
            for (int f : field_list) {
                Channel c{};
                c.kind = Channel::NVML_FIELD;
                c.device = dev;
                c.field = f;
                core->channels.push_back(c);
                if (!add_channel(Py_BuildValue("(sIs)", "nvml", g, kFieldNames[f]))) return fail();
            }
        }
    }
    for (const std::string &path : file_list) {
        int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            PyErr_SetFromErrnoWithFilename(PyExc_OSError, path.c_str());
            return fail();
        }
        Channel c{};
        c.kind = Channel::FILE_COUNTER;
        c.fd = fd;
        core->channels.push_back(c);
        if (!add_channel(Py_BuildValue("(sss)", "file", path.c_str(), "counter"))) return fail();
    }
    if (core->channels.size() > 0xffff) {
        PyErr_SetString(PyExc_ValueError, "too many channels");
        return fail();
    }

    size_t cap = 16;
    while (cap < size_t(capacity)) cap <<= 1;
    // reserved here, so that the thread never allocates (a page it first writes is a minor fault)
    void *ring = mmap(nullptr, cap * sizeof(Reading), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                      -1, 0);
    if (ring == MAP_FAILED) {
        PyErr_NoMemory();
        return fail();
    }
    core->ring = static_cast<Reading *>(ring);
    core->ring_bytes = cap * sizeof(Reading);
    core->mask = cap - 1;
    PyObject *channel_tuple = PyList_AsTuple(channels);
    if (!channel_tuple) return fail();
    Py_DECREF(channels);
    self->core = core;
    self->channels = channel_tuple;
    return 0;
}

bool require_core(SamplerObject *self) {
    if (!self->core) PyErr_SetString(PyExc_RuntimeError, "Sampler was not initialised");
    return self->core != nullptr;
}

PyObject *Sampler_start(SamplerObject *self, PyObject *) {
    if (!require_core(self)) return nullptr;
    std::string error;
    bool started = false;
    Py_BEGIN_ALLOW_THREADS
    try {
        started = self->core->start();
    } catch (const std::system_error &e) {
        error = e.what();
    }
    Py_END_ALLOW_THREADS
    if (!error.empty()) {
        PyErr_Format(PyExc_RuntimeError, "cannot start the sampling thread: %s", error.c_str());
        return nullptr;
    }
    if (!started) {
        PyErr_SetString(PyExc_RuntimeError, "Sampler is already running");
        return nullptr;
    }
    Py_RETURN_NONE;
}

PyObject *Sampler_stop(SamplerObject *self, PyObject *) {
    if (!require_core(self)) return nullptr;
    stop_core(self->core);
    Py_RETURN_NONE;
}

PyObject *Sampler_drain(SamplerObject *self, PyObject *) {
    if (!require_core(self)) return nullptr;
    return self->core->drain();
}

PyObject *Sampler_stats(SamplerObject *self, PyObject *) {
    if (!require_core(self)) return nullptr;
    Core *c = self->core;
    const uint64_t h = c->head.load(std::memory_order_acquire), t = c->tail.load(std::memory_order_acquire);
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:L,s:n}", "polls", (unsigned long long)c->polls.load(),
                         "stored", (unsigned long long)c->stored.load(), "dropped",
                         (unsigned long long)c->dropped.load(), "late", (unsigned long long)c->late.load(),
                         "undrained", (unsigned long long)(h - t), "thread_cpu_ns",
                         (long long)(c->cpu_ns_total.load() + c->cpu_ns_run.load()), "capacity",
                         Py_ssize_t(c->mask + 1));
}

PyObject *Sampler_get_running(SamplerObject *self, void *) {
    return PyBool_FromLong(self->core && self->core->running.load());
}

PyObject *Sampler_get_channels(SamplerObject *self, void *) {
    if (!require_core(self)) return nullptr;
    Py_INCREF(self->channels);
    return self->channels;
}

PyObject *Sampler_get_interval_ns(SamplerObject *self, void *) {
    if (!require_core(self)) return nullptr;
    return PyLong_FromLongLong(self->core->interval_ns);
}

PyMethodDef Sampler_methods[] = {
    {"start", (PyCFunction)Sampler_start, METH_NOARGS, "Start the sampling thread."},
    {"stop", (PyCFunction)Sampler_stop, METH_NOARGS,
     "Stop and join the sampling thread (its last readings stay in the buffer for drain())."},
    {"drain", (PyCFunction)Sampler_drain, METH_NOARGS,
     "Take every buffered reading, as bytes of READING_SIZE records (see READING_LAYOUT)."},
    {"stats", (PyCFunction)Sampler_stats, METH_NOARGS,
     "Counters: polls, stored, dropped (ring full), late (missed deadlines), undrained, thread_cpu_ns, "
     "capacity."},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef Sampler_getset[] = {
    {"running", (getter)Sampler_get_running, nullptr, "Whether the sampling thread runs.", nullptr},
    {"channels", (getter)Sampler_get_channels, nullptr,
     "One (kind, device, field) tuple per channel, in the order of Reading.channel.", nullptr},
    {"interval_ns", (getter)Sampler_get_interval_ns, nullptr, "Polling interval (0: as fast as possible).",
     nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

const char kSamplerDoc[] =
    "Sampler(library=None, gpus=(), fields=None, files=(), interval_ns=1000000, changed_only=False, "
    "capacity=1048576)\n\n"
    "Native sampling thread over NVML fields of the given GPUs and/or counter files.";

PyType_Slot Sampler_slots[] = {
    {Py_tp_dealloc, reinterpret_cast<void *>(Sampler_dealloc)},
    {Py_tp_init, reinterpret_cast<void *>(Sampler_init)},
    {Py_tp_new, reinterpret_cast<void *>(PyType_GenericNew)},
    {Py_tp_methods, Sampler_methods},
    {Py_tp_getset, Sampler_getset},
    {Py_tp_doc, const_cast<char *>(kSamplerDoc)},
    {0, nullptr}};

PyType_Spec Sampler_spec = {"phprof._sampler.Sampler", sizeof(SamplerObject), 0, Py_TPFLAGS_DEFAULT,
                            Sampler_slots};

// ---------------------------------------------------------------------------
// nvml_probe(library): what `phprof devices` shows. One reading of each field.

PyObject *nvml_probe(PyObject *, PyObject *args) {
    const char *library;
    if (!PyArg_ParseTuple(args, "s", &library)) return nullptr;
    NvmlLib *lib = load_nvml(library);
    if (!lib) return nullptr;
    unsigned count = 0;
    if (!nvml_init(lib, &count)) return nullptr;

    PyObject *result = nullptr, *devices = PyList_New(0);
    char driver[NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE] = "";
    if (!devices) goto done;
    if (lib->driver_version && lib->driver_version(driver, sizeof driver) != NVML_SUCCESS) driver[0] = '\0';
    for (unsigned i = 0; i < count; ++i) {
        nvmlDevice_t dev = nullptr;
        nvmlReturn_t rc = lib->handle_by_index(i, &dev);
        if (rc != NVML_SUCCESS) {  // this board cannot be read; the others may
            std::string why = "nvmlDeviceGetHandleByIndex_v2 failed: " + lib->describe(rc);
            PyObject *d = Py_BuildValue("{s:I,s:s,s:i}", "index", i, "error", why.c_str(), "status", int(rc));
            if (!d || PyList_Append(devices, d) < 0) {
                Py_XDECREF(d);
                goto done;
            }
            Py_DECREF(d);
            continue;
        }
        char name[NVML_DEVICE_NAME_BUFFER_SIZE] = "", uuid[NVML_DEVICE_UUID_BUFFER_SIZE] = "";
        nvmlPciInfo_t pci{};
        bool has_pci = lib->pci_info && lib->pci_info(dev, &pci) == NVML_SUCCESS;
        if (lib->device_name && lib->device_name(dev, name, sizeof name) != NVML_SUCCESS) name[0] = '\0';
        if (lib->device_uuid && lib->device_uuid(dev, uuid, sizeof uuid) != NVML_SUCCESS) uuid[0] = '\0';
        PyObject *fields = PyDict_New();
        if (!fields) goto done;
        for (int f = 0; f < N_FIELDS; ++f) {
            int64_t v = 0;
            int64_t t0 = realtime_ns();
            nvmlReturn_t frc = read_field(lib, dev, f, &v);
            int64_t t1 = realtime_ns();
            const char *err = frc == NVML_SUCCESS ? "" : (lib->error_string ? lib->error_string(frc) : "");
            PyObject *entry = Py_BuildValue("{s:i,s:s,s:L,s:L}", "status", int(frc), "error", err ? err : "",
                                            "value", (long long)(frc == NVML_SUCCESS ? v : 0), "call_ns",
                                            (long long)(t1 - t0));
            if (!entry || PyDict_SetItemString(fields, kFieldNames[f], entry) < 0) {
                Py_XDECREF(entry);
                Py_DECREF(fields);
                goto done;
            }
            Py_DECREF(entry);
        }
        unsigned limit_mw = 0;  // 0: unknown
        if (!lib->power_limit || lib->power_limit(dev, &limit_mw) != NVML_SUCCESS) limit_mw = 0;
        PyObject *pci_tuple = has_pci ? Py_BuildValue("(III)", pci.domain, pci.bus, pci.device) : Py_NewRef(Py_None);
        PyObject *d = pci_tuple ? Py_BuildValue("{s:I,s:s,s:s,s:N,s:I,s:N}", "index", i, "name", name, "uuid", uuid,
                                                "fields", fields, "power_limit_mw", limit_mw, "pci", pci_tuple)
                                : nullptr;
        if (!pci_tuple) Py_DECREF(fields);
        if (!d || PyList_Append(devices, d) < 0) {
            Py_XDECREF(d);
            goto done;
        }
        Py_DECREF(d);
    }
    result = Py_BuildValue("{s:s,s:s,s:O}", "library", library, "driver_version", driver, "devices", devices);
done:
    Py_XDECREF(devices);
    lib->shutdown();
    return result;
}

PyMethodDef module_methods[] = {
    {"nvml_probe", nvml_probe, METH_VARARGS,
     "nvml_probe(library) -> dict: driver version and, per GPU, name, uuid, pci (domain, bus, device) or None, power "
     "limit and one reading of each field; a GPU whose handle fails has only index, error and status."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_sampler",
                          "Native NVML/counter-file power sampler (see csrc/sampler.cpp).", -1, module_methods,
                          nullptr, nullptr, nullptr, nullptr};

PyObject *reading_layout() {
    // (name, numpy type string, offset): numpy builds its dtype from this, so
    // the record layout is declared in one place (struct Reading).
    return Py_BuildValue("((ssn)(ssn)(ssn)(ssn)(ssn)(ssn))",  //
                         "t_before_ns", "<i8", offsetof(Reading, t_before_ns),  //
                         "t_after_ns", "<i8", offsetof(Reading, t_after_ns),  //
                         "value", "<i8", offsetof(Reading, value),  //
                         "seq", "<u4", offsetof(Reading, seq),  //
                         "channel", "<u2", offsetof(Reading, channel),  //
                         "status", "<u2", offsetof(Reading, status));
}

}  // namespace

PyMODINIT_FUNC PyInit__sampler(void) {
    PyObject *sampler_type = PyType_FromSpec(&Sampler_spec);
    if (!sampler_type) return nullptr;
    PyObject *m = PyModule_Create(&module_def);
    if (!m) return nullptr;
    NvmlError = PyErr_NewExceptionWithDoc("phprof._sampler.NvmlError",
                                          "An NVML call failed; .code is the NVML return code.",
                                          PyExc_RuntimeError, nullptr);
    NvmlUnavailable = PyErr_NewExceptionWithDoc("phprof._sampler.NvmlUnavailable",
                                                "The NVML library cannot be loaded or is not NVML.",
                                                PyExc_OSError, nullptr);
    PyObject *fields = Py_BuildValue("(sss)", kFieldNames[0], kFieldNames[1], kFieldNames[2]);
    PyObject *layout = reading_layout();
    if (!NvmlError || !NvmlUnavailable || !fields || !layout ||
        PyModule_AddObject(m, "Sampler", sampler_type) < 0 ||
        PyModule_AddObject(m, "NvmlError", NvmlError) < 0 ||
        PyModule_AddObject(m, "NvmlUnavailable", NvmlUnavailable) < 0 ||
        PyModule_AddObject(m, "FIELDS", fields) < 0 || PyModule_AddObject(m, "READING_LAYOUT", layout) < 0 ||
        PyModule_AddIntConstant(m, "READING_SIZE", sizeof(Reading)) < 0 ||
        PyModule_AddIntConstant(m, "NVML_ERROR_NOT_SUPPORTED", NVML_ERROR_NOT_SUPPORTED) < 0 ||
        PyModule_AddIntConstant(m, "NVML_ERROR_FUNCTION_NOT_FOUND", NVML_ERROR_FUNCTION_NOT_FOUND) < 0) {
        Py_DECREF(m);
        return nullptr;
    }
    Py_INCREF(NvmlError);  // module holds one reference, the C globals another
    Py_INCREF(NvmlUnavailable);
    static bool hooks = false;
    if (!hooks) {
        std::atexit(stop_live_cores_at_exit);  // never leave a thread inside NVML at exit
        pthread_atfork(nullptr, nullptr, forget_threads_in_child);
        hooks = true;
    }
    return m;
}

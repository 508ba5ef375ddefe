/* Fake NVML: a GPU-less stand-in for libnvidia-ml.so.1 with a faithful power-sensor model.
 *
 * It exports the NVML entry points phprof and pynvml use (same names, signatures and return
 * codes as the real library, see csrc/nvml_api.h), those CodeCarbon 3.3 and Zeus 0.16 call on
 * their way to a GPU's energy (memory, limits, utilisation, temperature, compute mode, running
 * processes, C2C mode), plus a control API (fake_nvml_*) driven from tests through ctypes
 * (tools/fake_nvml/__init__.py).
 *
 * Model (facts from shared/docs/sensors.md):
 *   - Each device has a piecewise-constant *true* power p(t), written as an append-only ring of
 *     events {t_ns, watts, tag, cumulative energy, cumulative masked energy}. Time is
 *     CLOCK_REALTIME ns (the clock Kineto stamps trace events with).
 *   - Each NVML reading (energy counter, instant power, average power) is a *sensor* that
 *     publishes a value at update instants u_k = c + k*P (c = state creation + phase). Update k
 *     becomes visible at u_k + L and is held until the next one becomes visible. Power fields
 *     report the exact mean of p over [u_k - W, u_k], times a gain, with deterministic Gaussian
 *     noise, rounded to the resolution. The energy counter integrates p (continuous mode) or only
 *     the windows its own grid sees (windowed mode), times a gain, floored to the resolution.
 *   - The other readings follow the same true power, at the moment of the call: utilisation is
 *     the mean power over the last 1/6 s placed between idle (0%) and the power limit (100%);
 *     temperature is 30 C plus 0.1 C per watt of the mean power over the last second (a
 *     first-order stand-in for the board's thermal lag, not a thermal model); memory used is the
 *     sum of the processes' memory set through the control API (none by default), free the rest.
 *
 * All mutable state lives in one mmap'ed file (MAP_SHARED) so that several processes (a test
 * writing power, the sampler or pynvml reading it) see the same signal. Writers serialise on a
 * process-shared spinlock per device; readers take no lock (acquire loads of the event count, a
 * sequence lock around configuration changes) but let an in-flight writer finish first.
 * set_power_at with a time already in the past changes what visible updates showed: schedule
 * events at or after the current time.
 *
 * Energies are kept in nanojoules (W * ns) as doubles: with integer watts and ns times every
 * sum below 2^53 nJ (about 9 MJ) is exact, so tests can compare floors of exact values.
 */
#define _DEFAULT_SOURCE
#include "../../csrc/nvml_api.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------------ */
/* Constants                                                                                   */

/* NVML codes and ids that phprof itself does not use (so they are not in nvml_api.h). */
#define FAKE_NVML_ERROR_ALREADY_INITIALIZED 5 /* only for nvmlErrorString */
#define FAKE_NVML_FI_DEV_ENERGY 191           /* same counter as field 83 for the GPU scope */
#define FAKE_NVML_DEVICE_ARCH_AMPERE 7
#define FAKE_NVML_TEMPERATURE_GPU 0          /* the one temperature sensor */
#define FAKE_NVML_COMPUTEMODE_DEFAULT 0
#define FAKE_NVML_VALUE_NOT_AVAILABLE_UINT 0xFFFFFFFFu /* gpu/compute instance ids outside MIG */

#define FAKE_DRIVER_VERSION "999.99-fake"

/* Structs of the entry points only the fake implements (layouts of NVIDIA's nvml.h). */
typedef struct {
    unsigned long long total, free, used; /* bytes */
} fake_nvmlMemory_t;

typedef struct {
    unsigned int version; /* FAKE_NVML_MEMORY_V2 */
    unsigned long long total, reserved, free, used;
} fake_nvmlMemory_v2_t;
#define FAKE_NVML_MEMORY_V2 ((unsigned int)(sizeof(fake_nvmlMemory_v2_t) | (2u << 24)))

typedef struct {
    unsigned int gpu, memory; /* percent */
} fake_nvmlUtilization_t;

typedef struct {
    unsigned int version; /* FAKE_NVML_TEMPERATURE_V1 */
    int sensorType;
    int temperature; /* Celsius */
} fake_nvmlTemperature_t;
#define FAKE_NVML_TEMPERATURE_V1 ((unsigned int)(sizeof(fake_nvmlTemperature_t) | (1u << 24)))

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
} fake_nvmlProcessInfo_v1_t;

typedef struct { /* also nvmlProcessInfo_t of the _v3 calls */
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} fake_nvmlProcessInfo_v2_t;

typedef struct {
    unsigned int isC2cEnabled;
} fake_nvmlC2cModeInfo_t;
#define FAKE_NVML_VERSION "12.999.99-fake"

enum { FIELD_ENERGY = 0, FIELD_POWER_INSTANT = 1, FIELD_POWER_AVERAGE = 2, N_FIELDS = 3 };
enum { MODE_CONTINUOUS = 0, MODE_WINDOWED = 1 };

/* Control API return codes (fake_nvml_strerror describes them). */
enum {
    FAKE_OK = 0,
    FAKE_EINVAL = -1,    /* bad argument */
    FAKE_ETIME = -2,     /* event time earlier than the last event */
    FAKE_EOVERRUN = -3,  /* needed signal time no longer in the event ring */
    FAKE_ENOSTATE = -4,  /* no state created or attached */
    FAKE_EIO = -5,       /* file or mapping error */
    FAKE_ELAYOUT = -6    /* state file from another layout version */
};

#define MAX_DEVICES 8
#define MAX_TAGS 1024
#define MAX_PROCESSES 16                    /* per device and kind (compute, graphics) */
#define UTILIZATION_PERIOD_NS 166666667LL   /* NVML's utilisation sample period: 1/6 s to 1 s */
#define TEMPERATURE_PERIOD_NS 1000000000LL
#define TEMPERATURE_BASE_C 30.0
#define TEMPERATURE_C_PER_W 0.1
#define MIN_RING_CAPACITY 4
#define MAX_RING_CAPACITY (1LL << 26)
#define STATE_MAGIC 0x4c4d564e454b4146ULL /* "FAKENVML" in little-endian bytes */
#define STATE_VERSION 3u
#define NS_PER_MS 1000000LL

/* ------------------------------------------------------------------------------------------ */
/* Shared state layout (version STATE_VERSION)                                                 */

typedef struct {
    uint32_t pid;
    uint32_t reserved;
    uint64_t used_bytes;
} process_t;

enum { PROCESS_COMPUTE = 0, PROCESS_GRAPHICS = 1, N_PROCESS_KINDS = 2 };

typedef struct {
    int32_t status;     /* NVML return code for reads of this field; 0 = supported */
    int32_t mode;       /* energy only: MODE_CONTINUOUS or MODE_WINDOWED */
    int64_t period_ns;  /* P: update period */
    int64_t window_ns;  /* W: averaging window ending at each update instant */
    int64_t lag_ns;     /* L: update k becomes visible at u_k + L */
    int64_t phase_ns;   /* phi: u_k = created + phi + k*P; < 0 = derived from the seed */
    double noise;       /* relative Gaussian sigma (power fields) */
    double gain;        /* multiplicative systematic error, 1 = exact */
    uint64_t resolution; /* quantum: mW (power) or mJ (energy) */
    uint64_t initial_mj; /* energy only: counter value at each signal restart */
} field_cfg_t;

/* Everything a reading depends on besides the events; changed only under the sequence lock. */
typedef struct {
    field_cfg_t field[N_FIELDS];
    uint64_t seed;
    int64_t origin_ns;         /* counter origin: last signal restart or counter reset */
    double origin_nj;          /* E(origin) */
    double origin_masked_nj;   /* masked E(origin) (windowed energy mode) */
    uint64_t counter_base_mj;  /* counter value at the origin */
    char name[NVML_DEVICE_NAME_BUFFER_SIZE];
    uint32_t architecture;
    uint32_t power_limit_mw;
    double idle_w;
    uint64_t memory_total_bytes;
    uint32_t n_processes[N_PROCESS_KINDS];
    process_t processes[N_PROCESS_KINDS][MAX_PROCESSES];
    uint32_t pci_domain, pci_bus, pci_device; /* nvmlDeviceGetPciInfo_v3 */
    int32_t handle_status;                    /* what nvmlDeviceGetHandleByIndex_v2 returns; 0 = a handle */
} model_t;

typedef struct {
    int64_t t_ns;
    double watts;           /* level from t_ns until the next event */
    int32_t tag;
    int32_t reserved;
    double cum_nj;          /* true energy from the first event to t_ns */
    double cum_masked_nj;   /* energy inside the energy field's windows from the first event to t_ns */
} event_t;

typedef struct {
    _Atomic uint32_t lock;      /* writers' spinlock (process-shared: it lives in the mapping) */
    _Atomic uint32_t seq;       /* sequence lock over model and ring restarts; odd while writing */
    _Atomic uint64_t n_events;  /* events appended since the last restart (release-published) */
    _Atomic uint64_t calls[N_FIELDS];
    _Atomic int64_t call_latency_ns;
    _Atomic int32_t overrun;
    int32_t reserved;
    char uuid[NVML_DEVICE_UUID_BUFFER_SIZE]; /* fixed at creation */
    model_t model;
    double tag_nj[MAX_TAGS];    /* true energy of closed intervals per tag (under the lock) */
} device_t;

typedef struct {
    uint64_t magic;
    uint32_t version;
    uint32_t header_bytes;  /* offset of the first ring */
    uint64_t total_bytes;
    uint32_t n_devices;
    uint32_t event_bytes;
    uint64_t ring_capacity; /* events per device */
    int64_t created_ns;     /* anchor of every update grid */
    device_t dev[MAX_DEVICES];
} state_t;

_Static_assert(ATOMIC_INT_LOCK_FREE == 2 && ATOMIC_LLONG_LOCK_FREE == 2,
               "process-shared atomics need lock-free 32- and 64-bit atomics");

#define HEADER_BYTES ((sizeof(state_t) + 63) & ~(size_t)63)

/* ------------------------------------------------------------------------------------------ */
/* Process-local globals                                                                       */

/* Device handles point into this table; the index selects the device in the current state. */
struct nvmlDevice_st {
    unsigned int index;
};
static struct nvmlDevice_st g_handles[MAX_DEVICES] = {{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}};

static pthread_mutex_t g_mutex = PTHREAD_MUTEX_INITIALIZER; /* attach/detach and init count */
static _Atomic(state_t *) g_state;
static size_t g_map_bytes;
static _Atomic unsigned g_init_count;

/* ------------------------------------------------------------------------------------------ */
/* Small helpers                                                                               */

static int64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void busy_wait_ns(int64_t ns)
{
    if (ns <= 0)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t end = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec + ns;
    do
        clock_gettime(CLOCK_MONOTONIC, &ts);
    while ((int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec < end);
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0)))
        q--;
    return q;
}

/* splitmix64 finaliser: a well-mixed 64-bit hash, identical in every process. */
static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* Standard normal g_k drawn from (seed, device, field, k) by Box-Muller: every process and
 * every repeated read computes the same noise for the same update. */
static double std_normal(uint64_t seed, unsigned dev, int field, int64_t k)
{
    uint64_t key = mix64(mix64(mix64(seed) ^ dev) ^ (uint64_t)field) ^ (uint64_t)k;
    uint64_t a = mix64(key), b = mix64(a);
    double u1 = (double)((a >> 11) + 1) * 0x1p-53; /* (0, 1] */
    double u2 = (double)(b >> 11) * 0x1p-53;       /* [0, 1) */
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

static state_t *current_state(void) { return atomic_load_explicit(&g_state, memory_order_acquire); }

static event_t *ring_of(state_t *s, unsigned dev)
{
    return (event_t *)((char *)s + s->header_bytes) + (size_t)dev * s->ring_capacity;
}

static void dev_lock(device_t *d)
{
    unsigned spins = 0;
    for (;;) {
        if (!atomic_exchange_explicit(&d->lock, 1, memory_order_acquire))
            return;
        while (atomic_load_explicit(&d->lock, memory_order_relaxed))
            if (++spins % 128 == 0)
                sched_yield();
    }
}

static void dev_unlock(device_t *d) { atomic_store_explicit(&d->lock, 0, memory_order_release); }

/* Writers of the model (holding the device lock) bracket their changes with these. */
static void seq_begin(device_t *d)
{
    atomic_fetch_add_explicit(&d->seq, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
}

static void seq_end(device_t *d) { atomic_fetch_add_explicit(&d->seq, 1, memory_order_release); }

/* ------------------------------------------------------------------------------------------ */
/* Update grids and the window mask                                                            */

typedef struct {
    int64_t c, P, W, L; /* u_k = c + k*P, window [u_k - W, u_k], visible at u_k + L */
} grid_t;

/* Derived phases hash (seed, device, period), not the field: sensors with the same period
 * tick together, as one driver loop refreshing several readings would. */
static int64_t effective_phase(const model_t *m, unsigned dev, int field)
{
    const field_cfg_t *f = &m->field[field];
    if (f->phase_ns >= 0)
        return f->phase_ns;
    uint64_t h = mix64(mix64(m->seed ^ 0x5048415345ULL /* "PHASE" */) ^ dev) ^ (uint64_t)f->period_ns;
    return (int64_t)(mix64(h) % (uint64_t)f->period_ns);
}

static grid_t field_grid(const state_t *s, const model_t *m, unsigned dev, int field)
{
    const field_cfg_t *f = &m->field[field];
    grid_t g = {s->created_ns + effective_phase(m, dev, field), f->period_ns, f->window_ns, f->lag_ns};
    return g;
}

static int64_t grid_index_visible(const grid_t *g, int64_t t) { return floor_div(t - g->L - g->c, g->P); }

/* Measure (ns) of the windows [u_j - W, u_j] before t, up to a constant that cancels in
 * differences: F(b) - F(a) is the time in [a, b] that the windows cover. Shifting
 * y = t - (c - W) puts the windows at [jP, jP + W], so F(y) = floor(y/P)*W + min(y mod P, W).
 * Windows must not overlap (W <= P). */
static int64_t mask_measure(const grid_t *g, int64_t t)
{
    int64_t y = t - (g->c - g->W);
    int64_t q = floor_div(y, g->P);
    int64_t r = y - q * g->P;
    return q * g->W + (r < g->W ? r : g->W);
}

/* ------------------------------------------------------------------------------------------ */
/* Reading the signal                                                                          */

typedef struct {
    state_t *s;
    unsigned dev;
    const event_t *ev;
    uint64_t cap, lo, n; /* usable event indices [lo, n) */
    uint64_t min_used;   /* smallest index read, to detect a writer lapping the reader */
    model_t m;           /* snapshot */
} view_t;

/* E(t) and masked E(t) (nJ, from the first event) using only events with t_i <= t. */
static int energy_at(view_t *v, int64_t t, double *nj, double *masked_nj)
{
    const event_t *first = &v->ev[v->lo % v->cap];
    uint64_t i;
    if (v->lo < v->min_used)
        v->min_used = v->lo;
    if (t < first->t_ns) {
        if (v->lo != 0)
            return FAKE_EOVERRUN; /* the events that defined p(t) were overwritten */
        i = 0;                    /* p(t) before the first event is the first level */
    } else {
        uint64_t a = v->lo, b = v->n; /* last index with t_i <= t lies in [a, b) */
        while (b - a > 1) {
            uint64_t mid = a + (b - a) / 2;
            if (v->ev[mid % v->cap].t_ns <= t)
                a = mid;
            else
                b = mid;
        }
        i = a;
    }
    if (i < v->min_used)
        v->min_used = i;
    const event_t *e = &v->ev[i % v->cap];
    *nj = e->cum_nj + e->watts * (double)(t - e->t_ns);
    if (masked_nj) {
        grid_t g = field_grid(v->s, &v->m, v->dev, FIELD_ENERGY);
        *masked_nj = e->cum_masked_nj + e->watts * (double)(mask_measure(&g, t) - mask_measure(&g, e->t_ns));
    }
    return FAKE_OK;
}

static int field_is_windowed(const model_t *m) { return m->field[FIELD_ENERGY].mode == MODE_WINDOWED; }

/* The value the sensor of `field` shows at time t (mJ for energy, mW for power). */
static int sensor_value(view_t *v, int field, int64_t t, uint64_t *out)
{
    const field_cfg_t *f = &v->m.field[field];
    grid_t g = field_grid(v->s, &v->m, v->dev, field);
    int64_t k = grid_index_visible(&g, t);
    int64_t u = g.c + k * g.P;
    double r = (double)f->resolution;
    int rc;
    if (field == FIELD_ENERGY) {
        double e_nj, m_nj, mj;
        if ((rc = energy_at(v, u, &e_nj, field_is_windowed(&v->m) ? &m_nj : NULL)))
            return rc;
        if (f->mode == MODE_WINDOWED) /* each update adds avg_j * P = (P/W) * window energy */
            mj = (m_nj - v->m.origin_masked_nj) * (double)g.P / ((double)g.W * 1e6);
        else
            mj = (e_nj - v->m.origin_nj) / 1e6;
        mj *= f->gain;
        /* floor to the resolution: a counter never runs ahead; before the origin it reads base */
        *out = v->m.counter_base_mj + (mj > 0 ? (uint64_t)floor(mj / r) * f->resolution : 0);
        return FAKE_OK;
    }
    double e1, e0;
    if ((rc = energy_at(v, u, &e1, NULL)) || (rc = energy_at(v, u - g.W, &e0, NULL)))
        return rc;
    double mw = (e1 - e0) * 1e3 / (double)g.W; /* nJ / ns = W */
    mw *= f->gain;
    if (f->noise != 0.0)
        mw *= 1.0 + f->noise * std_normal(v->m.seed, v->dev, field, k);
    double q = round(mw / r) * r;
    *out = q <= 0 ? 0 : q >= (double)UINT_MAX ? UINT_MAX : (uint64_t)q;
    return FAKE_OK;
}

/* Runs fn on a consistent snapshot of a device (model and events) without taking its lock:
 * retries while a configuration change is in progress or when a writer lapped the events fn
 * read (then, after many tries, reports an overrun). */
typedef int (*view_fn)(view_t *v, void *arg);

static int with_view(state_t *s, unsigned dev, view_fn fn, void *arg)
{
    device_t *d = &s->dev[dev];
    const uint64_t cap = s->ring_capacity;
    const uint64_t margin = cap / 64; /* slack for writers appending while we read */
    for (int attempt = 0;; attempt++) {
        uint32_t seq0 = atomic_load_explicit(&d->seq, memory_order_acquire);
        if (seq0 & 1) {
            sched_yield();
            continue;
        }
        view_t v = {.s = s, .dev = dev, .ev = ring_of(s, dev), .cap = cap, .min_used = UINT64_MAX};
        memcpy(&v.m, &d->model, sizeof v.m);
        v.n = atomic_load_explicit(&d->n_events, memory_order_acquire);
        v.lo = v.n > cap ? v.n - cap + margin : 0;
        int rc = fn(&v, arg);
        atomic_thread_fence(memory_order_acquire);
        uint64_t n2 = atomic_load_explicit(&d->n_events, memory_order_relaxed);
        if (atomic_load_explicit(&d->seq, memory_order_relaxed) != seq0)
            continue;
        int lapped = n2 > cap && v.min_used != UINT64_MAX && v.min_used < n2 - cap;
        if (!lapped)
            return rc;
        if (attempt > 100)
            return FAKE_EOVERRUN;
    }
}

typedef struct {
    int field;
    int64_t t;
    int apply_status;
    int status;
    uint64_t value;
} sensor_read_t;

static int sensor_read_fn(view_t *v, void *arg)
{
    sensor_read_t *r = arg;
    r->status = r->apply_status ? v->m.field[r->field].status : 0;
    return r->status ? FAKE_OK : sensor_value(v, r->field, r->t, &r->value);
}

/* One sensor's value at t. If apply_status and the field is configured as unsupported,
 * *status gets that code and nothing is computed. */
static int read_sensor(state_t *s, unsigned dev, int field, int64_t t, int apply_status,
                       uint64_t *out, int *status)
{
    sensor_read_t r = {.field = field, .t = t, .apply_status = apply_status};
    int rc = with_view(s, dev, sensor_read_fn, &r);
    *out = r.value;
    *status = r.status;
    return rc;
}

typedef struct {
    int64_t t0, t1;
    double nj;
} energy_read_t;

static int energy_read_fn(view_t *v, void *arg)
{
    energy_read_t *r = arg;
    double e0, e1;
    int rc = energy_at(v, r->t0, &e0, NULL);
    if (!rc)
        rc = energy_at(v, r->t1, &e1, NULL);
    r->nj = rc ? 0 : e1 - e0;
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Writing the signal (callers hold the device lock)                                           */

/* at_now: the event's time is taken here, under the lock, and clamped to the last event's time;
 * so a reader that saw the lock free after its own read time has every event before it. */
static int append_event_locked(state_t *s, unsigned dev, int64_t t, double watts, int32_t tag, int at_now)
{
    device_t *d = &s->dev[dev];
    event_t *ev = ring_of(s, dev);
    uint64_t n = atomic_load_explicit(&d->n_events, memory_order_relaxed);
    const event_t *last = &ev[(n - 1) % s->ring_capacity];
    if (at_now) {
        int64_t now = realtime_ns();
        t = now > last->t_ns ? now : last->t_ns;
    } else if (t < last->t_ns) {
        return FAKE_ETIME;
    }
    event_t e = {.t_ns = t, .watts = watts, .tag = tag};
    double closed_nj = last->watts * (double)(t - last->t_ns);
    e.cum_nj = last->cum_nj + closed_nj;
    if (field_is_windowed(&d->model)) {
        grid_t g = field_grid(s, &d->model, dev, FIELD_ENERGY);
        e.cum_masked_nj = last->cum_masked_nj +
                          last->watts * (double)(mask_measure(&g, t) - mask_measure(&g, last->t_ns));
    }
    d->tag_nj[last->tag] += closed_nj;
    ev[n % s->ring_capacity] = e;
    atomic_store_explicit(&d->n_events, n + 1, memory_order_release);
    return FAKE_OK;
}

/* New ring holding one idle event at now; the counter restarts at the energy field's initial
 * value. Called inside seq_begin/seq_end. */
static void restart_signal_locked(state_t *s, unsigned dev)
{
    device_t *d = &s->dev[dev];
    int64_t now = realtime_ns();
    event_t first = {.t_ns = now, .watts = d->model.idle_w, .tag = 0};
    ring_of(s, dev)[0] = first;
    memset(d->tag_nj, 0, sizeof d->tag_nj);
    d->model.origin_ns = now;
    d->model.origin_nj = 0;
    d->model.origin_masked_nj = 0;
    d->model.counter_base_mj = d->model.field[FIELD_ENERGY].initial_mj;
    atomic_store_explicit(&d->n_events, 1, memory_order_release);
}

/* ------------------------------------------------------------------------------------------ */
/* Defaults: A100 (GA100). Keep in sync with PRESETS["a100"] and PRESET_DEVICES["a100"] in
 * __init__.py (tests/test_fake_nvml.py checks that they agree). Sources: sensors.md. */

static const field_cfg_t A100_FIELDS[N_FIELDS] = {
    /* energy counter: mJ, update period 10-100 ms reported; 20 ms chosen */
    [FIELD_ENERGY] = {.status = 0, .mode = MODE_CONTINUOUS, .period_ns = 20 * NS_PER_MS,
                      .window_ns = 20 * NS_PER_MS, .lag_ns = 0, .phase_ns = -1, .noise = 0.0,
                      .gain = 1.0, .resolution = 1, .initial_mj = 8000000000ULL},
    /* instant power: Yang et al. A100 data, update 101 ms from a 25 ms window */
    [FIELD_POWER_INSTANT] = {.status = 0, .mode = MODE_CONTINUOUS, .period_ns = 101 * NS_PER_MS,
                             .window_ns = 25 * NS_PER_MS, .lag_ns = 0, .phase_ns = -1, .noise = 0.01,
                             .gain = 1.0, .resolution = 1, .initial_mj = 0},
    /* GetPowerUsage on GA100 is the instant value, not a 1 s average */
    [FIELD_POWER_AVERAGE] = {.status = 0, .mode = MODE_CONTINUOUS, .period_ns = 101 * NS_PER_MS,
                             .window_ns = 25 * NS_PER_MS, .lag_ns = 0, .phase_ns = -1, .noise = 0.01,
                             .gain = 1.0, .resolution = 1, .initial_mj = 0},
};
#define A100_NAME "NVIDIA A100-SXM4-80GB"
#define A100_IDLE_W 60.0
#define A100_POWER_LIMIT_MW 400000u
#define A100_MEMORY_TOTAL_BYTES 85899345920ULL /* 81920 MiB, as NVML reports an A100 80GB */

/* ------------------------------------------------------------------------------------------ */
/* Creating and attaching state                                                                */

static size_t state_bytes(unsigned n_devices, uint64_t cap)
{
    return HEADER_BYTES + (size_t)n_devices * (size_t)cap * sizeof(event_t);
}

static void init_state(state_t *s, unsigned n_devices, uint64_t cap, size_t total)
{
    s->version = STATE_VERSION;
    s->header_bytes = (uint32_t)HEADER_BYTES;
    s->total_bytes = total;
    s->n_devices = n_devices;
    s->event_bytes = (uint32_t)sizeof(event_t);
    s->ring_capacity = cap;
    s->created_ns = realtime_ns();
    uint64_t state_id = mix64((uint64_t)s->created_ns ^ ((uint64_t)getpid() << 32));
    for (unsigned i = 0; i < n_devices; i++) {
        device_t *d = &s->dev[i];
        memcpy(d->model.field, A100_FIELDS, sizeof A100_FIELDS);
        snprintf(d->model.name, sizeof d->model.name, "%s", A100_NAME);
        snprintf(d->uuid, sizeof d->uuid, "GPU-fake-%08x-%04u", (unsigned)(state_id >> 32), i);
        d->model.architecture = FAKE_NVML_DEVICE_ARCH_AMPERE;
        d->model.power_limit_mw = A100_POWER_LIMIT_MW;
        d->model.memory_total_bytes = A100_MEMORY_TOTAL_BYTES;
        d->model.idle_w = A100_IDLE_W;
        d->model.pci_bus = 0x07 + 0x10 * i; /* as on a DGX: one bus per board */
        restart_signal_locked(s, i);
    }
    atomic_thread_fence(memory_order_release);
    s->magic = STATE_MAGIC; /* last: an attacher never sees a half-initialised state as valid */
}

/* Replaces the process's mapping (caller holds g_mutex). Handles stay valid: they are indices. */
static void install_locked(state_t *s, size_t bytes)
{
    state_t *old = atomic_exchange_explicit(&g_state, s, memory_order_acq_rel);
    if (old)
        munmap(old, g_map_bytes);
    g_map_bytes = bytes;
}

/* path NULL or "": anonymous mapping (shared with forked children only). */
static int create_locked(const char *path, int n_devices, long long cap)
{
    if (n_devices < 1 || n_devices > MAX_DEVICES || cap < MIN_RING_CAPACITY || cap > MAX_RING_CAPACITY)
        return FAKE_EINVAL;
    size_t bytes = state_bytes((unsigned)n_devices, (uint64_t)cap);
    void *p;
    if (!path || !*path) {
        p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    } else {
        /* A new inode: processes still mapping an older state file keep a valid mapping. */
        if (unlink(path) != 0 && errno != ENOENT) {
            fprintf(stderr, "fake NVML: cannot replace state file %s: %s\n", path, strerror(errno));
            return FAKE_EIO;
        }
        int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 || ftruncate(fd, (off_t)bytes) != 0) {
            fprintf(stderr, "fake NVML: cannot create state file %s: %s\n", path, strerror(errno));
            if (fd >= 0)
                close(fd);
            return FAKE_EIO;
        }
        p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
    }
    if (p == MAP_FAILED) {
        fprintf(stderr, "fake NVML: mmap of %zu bytes failed: %s\n", bytes, strerror(errno));
        return FAKE_EIO;
    }
    init_state((state_t *)p, (unsigned)n_devices, (uint64_t)cap, bytes);
    install_locked((state_t *)p, bytes);
    return FAKE_OK;
}

static int attach_locked(const char *path)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        fprintf(stderr, "fake NVML: cannot open state file %s: %s\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return FAKE_EIO;
    }
    size_t bytes = (size_t)st.st_size;
    if (bytes < sizeof(state_t)) {
        fprintf(stderr, "fake NVML: state file %s (%zu bytes) is too small for a fake NVML state of layout"
                " version %u: recreate the state with this build\n", path, bytes, STATE_VERSION);
        close(fd);
        return FAKE_ELAYOUT;
    }
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        fprintf(stderr, "fake NVML: cannot map state file %s: %s\n", path, strerror(errno));
        return FAKE_EIO;
    }
    state_t *s = (state_t *)p;
    if (s->magic != STATE_MAGIC || s->version != STATE_VERSION || s->header_bytes != HEADER_BYTES ||
        s->event_bytes != sizeof(event_t) || s->n_devices < 1 || s->n_devices > MAX_DEVICES ||
        s->ring_capacity < MIN_RING_CAPACITY || s->ring_capacity > (uint64_t)MAX_RING_CAPACITY ||
        s->total_bytes != bytes || state_bytes(s->n_devices, s->ring_capacity) != bytes) {
        fprintf(stderr,
                "fake NVML: state file %s has an incompatible layout (magic %#llx, version %u, header %u bytes);"
                " this library expects version %u with a %zu-byte header: recreate the state with this build\n",
                path, (unsigned long long)s->magic, s->version, s->header_bytes, STATE_VERSION, HEADER_BYTES);
        munmap(p, bytes);
        return FAKE_ELAYOUT;
    }
    install_locked(s, bytes);
    return FAKE_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* NVML API                                                                                    */

static void report_overrun(state_t *s, unsigned dev, int64_t t)
{
    if (atomic_exchange_explicit(&s->dev[dev].overrun, 1, memory_order_relaxed) == 0)
        fprintf(stderr,
                "fake NVML: device %u: event ring overrun: the reading at t=%lld ns needs power events older than the"
                " oldest of the %llu retained; create the state with a larger ring_capacity\n",
                dev, (long long)t, (unsigned long long)s->ring_capacity);
}

/* Common checks of device calls: library initialised, state attached, valid handle. */
static nvmlReturn_t device_begin(nvmlDevice_t h, state_t **s, unsigned *dev)
{
    if (atomic_load_explicit(&g_init_count, memory_order_acquire) == 0 || !(*s = current_state()))
        return NVML_ERROR_UNINITIALIZED;
    uintptr_t p = (uintptr_t)h, base = (uintptr_t)g_handles;
    if (p < base || p >= base + sizeof g_handles || (p - base) % sizeof g_handles[0])
        return NVML_ERROR_INVALID_ARGUMENT;
    *dev = h->index;
    return *dev < (*s)->n_devices ? NVML_SUCCESS : NVML_ERROR_INVALID_ARGUMENT;
}

/* A writer holding the lock may be appending an event stamped before a read time t taken just
 * now; writers that take the lock later stamp their events after t (set_power stamps under the
 * lock). Waiting out the current holder thus makes a read see every event before t, so that two
 * reads of one update always agree. */
static void settle_writers(device_t *d)
{
    unsigned spins = 0;
    while (atomic_load_explicit(&d->lock, memory_order_acquire))
        if (++spins % 128 == 0)
            sched_yield();
}

/* One NVML sensor read at time t: counts the call, honours the field status, reports overruns. */
static nvmlReturn_t nvml_read(state_t *s, unsigned dev, int field, int64_t t, uint64_t *out)
{
    int status;
    atomic_fetch_add_explicit(&s->dev[dev].calls[field], 1, memory_order_relaxed);
    settle_writers(&s->dev[dev]);
    int rc = read_sensor(s, dev, field, t, 1, out, &status);
    if (rc == FAKE_EOVERRUN) {
        report_overrun(s, dev, t);
        return NVML_ERROR_UNKNOWN;
    }
    return rc ? NVML_ERROR_UNKNOWN : status;
}

static void call_latency(state_t *s, unsigned dev)
{
    busy_wait_ns(atomic_load_explicit(&s->dev[dev].call_latency_ns, memory_order_relaxed));
}

static nvmlReturn_t copy_string(char *dst, unsigned int len, const char *src)
{
    if (!dst)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(src) + 1 > len)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(dst, src, strlen(src) + 1);
    return NVML_SUCCESS;
}

/* Flags (NVML_INIT_FLAG_NO_GPUS, ...) are accepted and ignored. Attaches to the state named by
 * PHPROF_FAKE_NVML_STATE unless a state is already mapped in this process. With neither (a
 * subprocess started without FakeNvml.env), there is no GPU to show: the call fails as NVML
 * does on a machine whose driver is not loaded, rather than inventing a different GPU. */
nvmlReturn_t nvmlInitWithFlags(unsigned int flags)
{
    (void)flags;
    pthread_mutex_lock(&g_mutex);
    nvmlReturn_t rc = NVML_SUCCESS;
    if (!current_state()) {
        const char *path = getenv("PHPROF_FAKE_NVML_STATE");
        if (!path || !*path) {
            fprintf(stderr, "fake NVML: no state: PHPROF_FAKE_NVML_STATE is not set and this process created none;"
                            " start subprocesses with FakeNvml.env so that they see the test's GPUs\n");
            rc = NVML_ERROR_DRIVER_NOT_LOADED;
        } else if (attach_locked(path) != FAKE_OK) {
            rc = NVML_ERROR_UNKNOWN;
        }
    }
    if (rc == NVML_SUCCESS)
        atomic_fetch_add_explicit(&g_init_count, 1, memory_order_release);
    pthread_mutex_unlock(&g_mutex);
    return rc;
}

nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }

nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }

/* Reference-counted like NVML; the mapping stays so that the controller keeps working. */
nvmlReturn_t nvmlShutdown(void)
{
    pthread_mutex_lock(&g_mutex);
    unsigned n = atomic_load_explicit(&g_init_count, memory_order_relaxed);
    if (n)
        atomic_store_explicit(&g_init_count, n - 1, memory_order_release);
    pthread_mutex_unlock(&g_mutex);
    return n ? NVML_SUCCESS : NVML_ERROR_UNINITIALIZED;
}

const char *nvmlErrorString(nvmlReturn_t result)
{
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case FAKE_NVML_ERROR_ALREADY_INITIALIZED: return "Already Initialized";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_LIBRARY_NOT_FOUND: return "NVML Shared Library Not Found";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_UNKNOWN: return "Unknown Error";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
    if (!atomic_load(&g_init_count))
        return NVML_ERROR_UNINITIALIZED;
    return copy_string(version, length, FAKE_DRIVER_VERSION);
}

nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length)
{
    return copy_string(version, length, FAKE_NVML_VERSION);
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count)
{
    state_t *s;
    if (!atomic_load(&g_init_count) || !(s = current_state()))
        return NVML_ERROR_UNINITIALIZED;
    if (!count)
        return NVML_ERROR_INVALID_ARGUMENT;
    *count = s->n_devices;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return nvmlDeviceGetCount_v2(count); }

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
    state_t *s;
    if (!atomic_load(&g_init_count) || !(s = current_state()))
        return NVML_ERROR_UNINITIALIZED;
    if (!device || index >= s->n_devices)
        return NVML_ERROR_INVALID_ARGUMENT;
    int32_t status = atomic_load_explicit((_Atomic int32_t *)&s->dev[index].model.handle_status,
                                          memory_order_acquire);
    if (status)
        return status; /* a board the driver cannot reach (set_handle_status) */
    *device = &g_handles[index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device)
{
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index)
{
    state_t *s;
    unsigned dev;
    nvmlReturn_t rc = device_begin(device, &s, &dev);
    if (rc)
        return rc;
    if (!index)
        return NVML_ERROR_INVALID_ARGUMENT;
    *index = dev;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length)
{
    state_t *s;
    unsigned dev;
    nvmlReturn_t rc = device_begin(device, &s, &dev);
    if (rc)
        return rc;
    device_t *d = &s->dev[dev];
    char copy[NVML_DEVICE_NAME_BUFFER_SIZE];
    uint32_t seq0;
    do { /* the name may be renamed concurrently: copy under the sequence lock */
        while ((seq0 = atomic_load_explicit(&d->seq, memory_order_acquire)) & 1)
            sched_yield();
        memcpy(copy, d->model.name, sizeof copy);
        atomic_thread_fence(memory_order_acquire);
    } while (atomic_load_explicit(&d->seq, memory_order_relaxed) != seq0);
    copy[sizeof copy - 1] = '\0';
    return copy_string(name, length, copy);
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length)
{
    state_t *s;
    unsigned dev;
    nvmlReturn_t rc = device_begin(device, &s, &dev);
    return rc ? rc : copy_string(uuid, length, s->dev[dev].uuid);
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    state_t *s;
    unsigned dev;
    nvmlReturn_t rc = device_begin(device, &s, &dev);
    if (rc)
        return rc;
    if (!pci)
        return NVML_ERROR_INVALID_ARGUMENT;
    const model_t *m = &s->dev[dev].model;
    memset(pci, 0, sizeof *pci);
    pci->domain = m->pci_domain;
    pci->bus = m->pci_bus;
    pci->device = m->pci_device;
    pci->pciDeviceId = 0x20b510deu; /* an A100's device and vendor ids */
    snprintf(pci->busId, sizeof pci->busId, "%08X:%02X:%02X.0", m->pci_domain, m->pci_bus, m->pci_device);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X:%02X:%02X.0", m->pci_domain & 0xffffu, m->pci_bus,
             m->pci_device);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetArchitecture(nvmlDevice_t device, unsigned int *arch)
{
    state_t *s;
    unsigned dev;
    nvmlReturn_t rc = device_begin(device, &s, &dev);
    if (rc)
        return rc;
    if (!arch)
        return NVML_ERROR_INVALID_ARGUMENT;
    *arch = s->dev[dev].model.architecture;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPowerManagementLimit(nvmlDevice_t device, unsigned int *limit)
{
    state_t *s;
    unsigned dev;
    nvmlReturn_t rc = device_begin(device, &s, &dev);
    if (rc)
        return rc;
    if (!limit)
        return NVML_ERROR_INVALID_ARGUMENT;
    *limit = s->dev[dev].model.power_limit_mw;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t device, unsigned int *limit)
{
    return nvmlDeviceGetPowerManagementLimit(device, limit); /* no other limit is applied */
}

/* The model of a device as it stands, copied under its sequence lock. */
static nvmlReturn_t model_now(nvmlDevice_t device, model_t *out, state_t **s_out, unsigned *dev_out)
{
    state_t *s;
    unsigned dev;
    nvmlReturn_t rc = device_begin(device, &s, &dev);
    if (rc)
        return rc;
    device_t *d = &s->dev[dev];
    uint32_t seq0;
    do {
        while ((seq0 = atomic_load_explicit(&d->seq, memory_order_acquire)) & 1)
            sched_yield();
        memcpy(out, &d->model, sizeof *out);
        atomic_thread_fence(memory_order_acquire);
    } while (atomic_load_explicit(&d->seq, memory_order_relaxed) != seq0);
    if (s_out)
        *s_out = s;
    if (dev_out)
        *dev_out = dev;
    return NVML_SUCCESS;
}

static uint64_t memory_used(const model_t *m)
{
    uint64_t used = 0;
    for (int k = 0; k < N_PROCESS_KINDS; k++)
        for (uint32_t i = 0; i < m->n_processes[k]; i++)
            used += m->processes[k][i].used_bytes;
    return used < m->memory_total_bytes ? used : m->memory_total_bytes;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, fake_nvmlMemory_t *memory)
{
    model_t m;
    nvmlReturn_t rc = model_now(device, &m, NULL, NULL);
    if (rc)
        return rc;
    if (!memory)
        return NVML_ERROR_INVALID_ARGUMENT;
    memory->total = m.memory_total_bytes;
    memory->used = memory_used(&m);
    memory->free = m.memory_total_bytes - memory->used;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, fake_nvmlMemory_v2_t *memory)
{
    model_t m;
    nvmlReturn_t rc = model_now(device, &m, NULL, NULL);
    if (rc)
        return rc;
    if (!memory || memory->version != FAKE_NVML_MEMORY_V2)
        return NVML_ERROR_INVALID_ARGUMENT;
    memory->total = m.memory_total_bytes;
    memory->reserved = 0;
    memory->used = memory_used(&m);
    memory->free = m.memory_total_bytes - memory->used;
    return NVML_SUCCESS;
}

typedef struct {
    int64_t t, span;
    double watts;
} mean_power_t;

static int mean_power_fn(view_t *v, void *arg)
{
    mean_power_t *r = arg;
    double e0, e1;
    int rc = energy_at(v, r->t - r->span, &e0, NULL);
    if (!rc)
        rc = energy_at(v, r->t, &e1, NULL);
    r->watts = rc ? 0 : (e1 - e0) / (double)r->span; /* nJ / ns */
    return rc;
}

/* Mean true power (W) over the `span_ns` before now, and the device's model. */
static nvmlReturn_t recent_power(nvmlDevice_t device, int64_t span_ns, double *watts, model_t *m)
{
    state_t *s;
    unsigned dev;
    nvmlReturn_t rc = model_now(device, m, &s, &dev);
    if (rc)
        return rc;
    settle_writers(&s->dev[dev]);
    mean_power_t r = {.t = realtime_ns(), .span = span_ns};
    int frc = with_view(s, dev, mean_power_fn, &r);
    if (frc == FAKE_EOVERRUN)
        report_overrun(s, dev, r.t - span_ns);
    if (frc)
        return NVML_ERROR_UNKNOWN;
    *watts = r.watts;
    return NVML_SUCCESS;
}

/* Utilisation follows the true power: its mean over the last sample period, placed between
 * idle (0%) and the power limit (100%); memory utilisation is given the same share. */
nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, fake_nvmlUtilization_t *utilization)
{
    double w;
    model_t m;
    nvmlReturn_t rc = model_now(device, &m, NULL, NULL);
    if (rc)
        return rc;
    if (!utilization)
        return NVML_ERROR_INVALID_ARGUMENT;
    if ((rc = recent_power(device, UTILIZATION_PERIOD_NS, &w, &m)))
        return rc;
    double range = m.power_limit_mw / 1e3 - m.idle_w;
    double share = range > 0 ? (w - m.idle_w) / range : 0.0;
    unsigned pct = share <= 0 ? 0u : share >= 1 ? 100u : (unsigned)lround(100.0 * share);
    utilization->gpu = utilization->memory = pct;
    return NVML_SUCCESS;
}

static nvmlReturn_t temperature_c(nvmlDevice_t device, int sensor, int *celsius)
{
    double w;
    model_t m;
    nvmlReturn_t rc = model_now(device, &m, NULL, NULL);
    if (rc)
        return rc;
    if (sensor != FAKE_NVML_TEMPERATURE_GPU || !celsius)
        return NVML_ERROR_INVALID_ARGUMENT;
    if ((rc = recent_power(device, TEMPERATURE_PERIOD_NS, &w, &m)))
        return rc;
    *celsius = (int)lround(TEMPERATURE_BASE_C + TEMPERATURE_C_PER_W * w);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, int sensorType, unsigned int *temp)
{
    int c = 0;
    nvmlReturn_t rc = temperature_c(device, sensorType, temp ? &c : NULL);
    if (rc == NVML_SUCCESS)
        *temp = (unsigned int)c;
    return rc;
}

nvmlReturn_t nvmlDeviceGetTemperatureV(nvmlDevice_t device, fake_nvmlTemperature_t *temperature)
{
    model_t m;
    nvmlReturn_t rc = model_now(device, &m, NULL, NULL);
    if (rc)
        return rc;
    if (!temperature || temperature->version != FAKE_NVML_TEMPERATURE_V1)
        return NVML_ERROR_INVALID_ARGUMENT;
    return temperature_c(device, temperature->sensorType, &temperature->temperature);
}

nvmlReturn_t nvmlDeviceGetComputeMode(nvmlDevice_t device, int *mode)
{
    model_t m;
    nvmlReturn_t rc = model_now(device, &m, NULL, NULL);
    if (rc)
        return rc;
    if (!mode)
        return NVML_ERROR_INVALID_ARGUMENT;
    *mode = FAKE_NVML_COMPUTEMODE_DEFAULT;
    return NVML_SUCCESS;
}

/* Not a Grace Hopper superchip: no chip-to-chip link. */
nvmlReturn_t nvmlDeviceGetC2cModeInfoV(nvmlDevice_t device, fake_nvmlC2cModeInfo_t *info)
{
    model_t m;
    nvmlReturn_t rc = model_now(device, &m, NULL, NULL);
    if (rc)
        return rc;
    if (!info)
        return NVML_ERROR_INVALID_ARGUMENT;
    info->isC2cEnabled = 0;
    return NVML_SUCCESS;
}

/* NVML's protocol for process lists: with too small a buffer (or none), *count gets the number
 * of processes and the call returns INSUFFICIENT_SIZE, unless there are none. */
static nvmlReturn_t running_processes(nvmlDevice_t device, int kind, unsigned int *count, void *infos,
                                      int version)
{
    model_t m;
    nvmlReturn_t rc = model_now(device, &m, NULL, NULL);
    if (rc)
        return rc;
    if (!count)
        return NVML_ERROR_INVALID_ARGUMENT;
    uint32_t n = m.n_processes[kind];
    if (n == 0 || !infos || *count < n) {
        *count = n;
        return n == 0 ? NVML_SUCCESS : NVML_ERROR_INSUFFICIENT_SIZE;
    }
    for (uint32_t i = 0; i < n; i++) {
        const process_t *p = &m.processes[kind][i];
        if (version == 1) {
            fake_nvmlProcessInfo_v1_t *o = (fake_nvmlProcessInfo_v1_t *)infos + i;
            o->pid = p->pid;
            o->usedGpuMemory = p->used_bytes;
        } else {
            fake_nvmlProcessInfo_v2_t *o = (fake_nvmlProcessInfo_v2_t *)infos + i;
            o->pid = p->pid;
            o->usedGpuMemory = p->used_bytes;
            o->gpuInstanceId = o->computeInstanceId = FAKE_NVML_VALUE_NOT_AVAILABLE_UINT;
        }
    }
    *count = n;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned int *count, fake_nvmlProcessInfo_v2_t *p)
{
    return running_processes(d, PROCESS_COMPUTE, count, p, 3);
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t d, unsigned int *count, fake_nvmlProcessInfo_v2_t *p)
{
    return running_processes(d, PROCESS_COMPUTE, count, p, 2);
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t d, unsigned int *count, fake_nvmlProcessInfo_v1_t *p)
{
    return running_processes(d, PROCESS_COMPUTE, count, p, 1);
}

nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t d, unsigned int *count, fake_nvmlProcessInfo_v2_t *p)
{
    return running_processes(d, PROCESS_GRAPHICS, count, p, 3);
}

nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v2(nvmlDevice_t d, unsigned int *count, fake_nvmlProcessInfo_v2_t *p)
{
    return running_processes(d, PROCESS_GRAPHICS, count, p, 2);
}

nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses(nvmlDevice_t d, unsigned int *count, fake_nvmlProcessInfo_v1_t *p)
{
    return running_processes(d, PROCESS_GRAPHICS, count, p, 1);
}

/* One sensor read "now" through a classic (non-field) entry point. */
static nvmlReturn_t read_now(nvmlDevice_t device, int field, const void *out, uint64_t *v)
{
    state_t *s;
    unsigned dev;
    nvmlReturn_t rc = device_begin(device, &s, &dev);
    if (rc)
        return rc;
    if (!out)
        return NVML_ERROR_INVALID_ARGUMENT;
    call_latency(s, dev);
    return nvml_read(s, dev, field, realtime_ns(), v);
}

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device, unsigned long long *energy)
{
    uint64_t v = 0;
    nvmlReturn_t rc = read_now(device, FIELD_ENERGY, energy, &v);
    if (rc == NVML_SUCCESS)
        *energy = v;
    return rc;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power)
{
    uint64_t v = 0;
    nvmlReturn_t rc = read_now(device, FIELD_POWER_AVERAGE, power, &v);
    if (rc == NVML_SUCCESS)
        *power = (unsigned int)v;
    return rc;
}

/* All values of one call are read at the same instant; its CLOCK_REALTIME time in us is each
 * value's timestamp. Power fields exist for the GPU scope (0) only. */
nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t device, int valuesCount, nvmlFieldValue_t *values)
{
    state_t *s;
    unsigned dev;
    nvmlReturn_t rc = device_begin(device, &s, &dev);
    if (rc)
        return rc;
    if (valuesCount < 0 || (valuesCount > 0 && !values))
        return NVML_ERROR_INVALID_ARGUMENT;
    call_latency(s, dev);
    int64_t t = realtime_ns();
    for (int i = 0; i < valuesCount; i++) {
        nvmlFieldValue_t *fv = &values[i];
        int field;
        switch (fv->fieldId) {
        case NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION:
        case FAKE_NVML_FI_DEV_ENERGY: field = FIELD_ENERGY; break;
        case NVML_FI_DEV_POWER_AVERAGE: field = FIELD_POWER_AVERAGE; break;
        case NVML_FI_DEV_POWER_INSTANT: field = FIELD_POWER_INSTANT; break;
        default: field = -1; break;
        }
        fv->timestamp = t / 1000;
        fv->latencyUsec = 0;
        fv->value.ullVal = 0;
        if (field < 0 || (field != FIELD_ENERGY && fv->scopeId != 0)) {
            fv->nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
            continue;
        }
        uint64_t v = 0;
        fv->nvmlReturn = nvml_read(s, dev, field, t, &v);
        if (field == FIELD_ENERGY) {
            fv->valueType = NVML_VALUE_TYPE_UNSIGNED_LONG_LONG;
            fv->value.ullVal = v;
        } else {
            fv->valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
            fv->value.uiVal = (unsigned int)v;
        }
    }
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------------------------------------ */
/* Control API (fake_nvml_*). Ints: 0 = ok, negative = FAKE_E* (see fake_nvml_strerror).      */
/* Field numbers: 0 = energy, 1 = power_instant, 2 = power_average.                            */

const char *fake_nvml_strerror(int code)
{
    switch (code) {
    case FAKE_OK: return "ok";
    case FAKE_EINVAL: return "invalid argument";
    case FAKE_ETIME: return "event time is earlier than the device's last event";
    case FAKE_EOVERRUN: return "event ring overrun: the needed power events were overwritten";
    case FAKE_ENOSTATE: return "no fake NVML state: call fake_nvml_create or fake_nvml_attach first";
    case FAKE_EIO: return "cannot create, open or map the state file (see stderr)";
    case FAKE_ELAYOUT: return "state file has an incompatible layout (see stderr)";
    default: return "unknown fake NVML error";
    }
}

/* Resolves the current state and validates a device index. */
static int get_device(int dev, state_t **s)
{
    if (!(*s = current_state()))
        return FAKE_ENOSTATE;
    return dev >= 0 && (unsigned)dev < (*s)->n_devices ? FAKE_OK : FAKE_EINVAL;
}

static int valid_field(int field) { return field >= 0 && field < N_FIELDS; }

int fake_nvml_create(const char *path, int n_devices, long long ring_capacity)
{
    pthread_mutex_lock(&g_mutex);
    int rc = create_locked(path, n_devices, ring_capacity);
    pthread_mutex_unlock(&g_mutex);
    return rc;
}

int fake_nvml_attach(const char *path)
{
    if (!path || !*path)
        return FAKE_EINVAL;
    pthread_mutex_lock(&g_mutex);
    int rc = attach_locked(path);
    pthread_mutex_unlock(&g_mutex);
    return rc;
}

/* Unmaps the state; NVML device calls then return NVML_ERROR_UNINITIALIZED until a state is
 * created or attached again (a later nvmlInit attaches one). No reader may be running. */
int fake_nvml_detach(void)
{
    pthread_mutex_lock(&g_mutex);
    int rc = current_state() ? FAKE_OK : FAKE_ENOSTATE;
    install_locked(NULL, 0);
    pthread_mutex_unlock(&g_mutex);
    return rc;
}

int fake_nvml_device_count(void)
{
    state_t *s = current_state();
    return s ? (int)s->n_devices : FAKE_ENOSTATE;
}

/* Changes a device's model; restart != 0 also restarts its signal (see fake_nvml_configure_field). */
typedef void (*model_edit_fn)(model_t *m, const void *arg);

static int edit_model(int dev, model_edit_fn edit, const void *arg, int restart)
{
    state_t *s;
    int rc = get_device(dev, &s);
    if (rc)
        return rc;
    device_t *d = &s->dev[dev];
    dev_lock(d);
    seq_begin(d);
    edit(&d->model, arg);
    if (restart)
        restart_signal_locked(s, (unsigned)dev);
    seq_end(d);
    dev_unlock(d);
    return FAKE_OK;
}

static void edit_name(model_t *m, const void *arg) { snprintf(m->name, sizeof m->name, "%s", (const char *)arg); }
static void edit_idle(model_t *m, const void *arg) { m->idle_w = *(const double *)arg; }
static void edit_seed(model_t *m, const void *arg) { m->seed = *(const uint64_t *)arg; }
static void edit_arch(model_t *m, const void *arg) { m->architecture = *(const uint32_t *)arg; }
static void edit_limit(model_t *m, const void *arg) { m->power_limit_mw = *(const uint32_t *)arg; }
static void edit_memory(model_t *m, const void *arg) { m->memory_total_bytes = *(const uint64_t *)arg; }

typedef struct {
    int kind;
    uint32_t n;
    process_t list[MAX_PROCESSES];
} processes_edit_t;

static void edit_processes(model_t *m, const void *arg)
{
    const processes_edit_t *e = arg;
    m->n_processes[e->kind] = e->n;
    memcpy(m->processes[e->kind], e->list, sizeof e->list);
}

typedef struct {
    int field;
    field_cfg_t cfg;
} field_edit_t;

static void edit_field(model_t *m, const void *arg)
{
    const field_edit_t *e = arg;
    m->field[e->field] = e->cfg;
}

typedef struct {
    uint32_t domain, bus, device;
} pci_edit_t;

static void edit_pci(model_t *m, const void *arg)
{
    const pci_edit_t *e = arg;
    m->pci_domain = e->domain;
    m->pci_bus = e->bus;
    m->pci_device = e->device;
}

static void edit_handle_status(model_t *m, const void *arg)
{
    atomic_store_explicit((_Atomic int32_t *)&m->handle_status, *(const int32_t *)arg, memory_order_release);
}

/* The board's place on the PCI bus, as nvmlDeviceGetPciInfo_v3 reports it. */
int fake_nvml_set_pci(int dev, unsigned int domain, unsigned int bus, unsigned int device)
{
    if (bus > 0xff || device > 0x1f)
        return FAKE_EINVAL;
    pci_edit_t e = {domain, bus, device};
    return edit_model(dev, edit_pci, &e, 0);
}

/* What nvmlDeviceGetHandleByIndex_v2 returns for the device: 0, a handle; else that NVML error
 * (a board the driver cannot reach: NVML_ERROR_GPU_IS_LOST, NO_PERMISSION...). */
int fake_nvml_set_handle_status(int dev, int status)
{
    if (status < 0)
        return FAKE_EINVAL;
    int32_t st = status;
    return edit_model(dev, edit_handle_status, &st, 0);
}

/* The device's UUID (fixed at creation otherwise), as nvmlDeviceGetUUID reports it. */
int fake_nvml_set_uuid(int dev, const char *uuid)
{
    state_t *s;
    int rc = get_device(dev, &s);
    if (rc)
        return rc;
    if (!uuid || !*uuid || strlen(uuid) >= NVML_DEVICE_UUID_BUFFER_SIZE)
        return FAKE_EINVAL;
    device_t *d = &s->dev[dev];
    dev_lock(d);
    seq_begin(d);
    snprintf(d->uuid, sizeof d->uuid, "%s", uuid);
    seq_end(d);
    dev_unlock(d);
    return FAKE_OK;
}

int fake_nvml_set_name(int dev, const char *name)
{
    if (!name || !*name || strlen(name) >= NVML_DEVICE_NAME_BUFFER_SIZE)
        return FAKE_EINVAL;
    return edit_model(dev, edit_name, name, 0);
}

/* The idle level is the signal's level at a restart, so this restarts the signal. */
int fake_nvml_set_idle(int dev, double watts)
{
    if (!isfinite(watts) || watts < 0)
        return FAKE_EINVAL;
    return edit_model(dev, edit_idle, &watts, 1);
}

/* The seed sets the noise and the derived phases (hence the windowed mask): restarts the signal. */
int fake_nvml_set_seed(int dev, unsigned long long seed)
{
    uint64_t s64 = seed;
    return edit_model(dev, edit_seed, &s64, 1);
}

int fake_nvml_set_architecture(int dev, unsigned int arch)
{
    uint32_t a = arch;
    return edit_model(dev, edit_arch, &a, 0);
}

int fake_nvml_set_power_limit(int dev, unsigned int milliwatts)
{
    uint32_t l = milliwatts;
    return edit_model(dev, edit_limit, &l, 0);
}

int fake_nvml_set_memory_total(int dev, unsigned long long bytes)
{
    uint64_t b = bytes;
    return bytes == 0 ? FAKE_EINVAL : edit_model(dev, edit_memory, &b, 0);
}

/* The processes NVML lists on a device (kind 0: compute, 1: graphics), with their memory. */
int fake_nvml_set_processes(int dev, int kind, int n, const unsigned int *pids,
                            const unsigned long long *used_bytes)
{
    if (kind < 0 || kind >= N_PROCESS_KINDS || n < 0 || n > MAX_PROCESSES || (n > 0 && (!pids || !used_bytes)))
        return FAKE_EINVAL;
    processes_edit_t e = {.kind = kind, .n = (uint32_t)n};
    for (int i = 0; i < n; i++)
        e.list[i] = (process_t){.pid = pids[i], .used_bytes = used_bytes[i]};
    return edit_model(dev, edit_processes, &e, 0);
}

/* Reconfiguring restarts the device's signal (a new ring with one idle event at now, counter
 * back at initial_mj) so that the cumulative masked energies stay consistent with the grid.
 * phase_ns < 0: phase derived from the seed. Windowed energy needs 0 < window <= period. */
int fake_nvml_configure_field(int dev, int field, int status, long long period_ns, long long window_ns,
                              long long lag_ns, long long phase_ns, double noise, double gain,
                              unsigned long long resolution, int mode, unsigned long long initial_mj)
{
    if (!valid_field(field) || status < 0 || period_ns <= 0 || window_ns <= 0 || lag_ns < 0 ||
        !isfinite(noise) || noise < 0 || !isfinite(gain) || gain <= 0 || resolution < 1 ||
        (mode != MODE_CONTINUOUS && mode != MODE_WINDOWED))
        return FAKE_EINVAL;
    if (field != FIELD_ENERGY && (mode != MODE_CONTINUOUS || initial_mj != 0))
        return FAKE_EINVAL;
    if (mode == MODE_WINDOWED && window_ns > period_ns)
        return FAKE_EINVAL;
    field_edit_t e = {field,
                      {.status = status, .mode = mode, .period_ns = period_ns, .window_ns = window_ns,
                       .lag_ns = lag_ns, .phase_ns = phase_ns < 0 ? -1 : phase_ns, .noise = noise,
                       .gain = gain, .resolution = resolution, .initial_mj = initial_mj}};
    return edit_model(dev, edit_field, &e, 1);
}

/* Reads back a field's configuration (phase_ns = -1 when derived from the seed). */
int fake_nvml_get_field(int dev, int field, int *status, long long *period_ns, long long *window_ns,
                        long long *lag_ns, long long *phase_ns, double *noise, double *gain,
                        unsigned long long *resolution, int *mode, unsigned long long *initial_mj)
{
    state_t *s;
    int rc = get_device(dev, &s);
    if (rc)
        return rc;
    if (!valid_field(field))
        return FAKE_EINVAL;
    device_t *d = &s->dev[dev];
    dev_lock(d);
    field_cfg_t f = d->model.field[field];
    dev_unlock(d);
    *status = f.status;
    *period_ns = f.period_ns;
    *window_ns = f.window_ns;
    *lag_ns = f.lag_ns;
    *phase_ns = f.phase_ns;
    *noise = f.noise;
    *gain = f.gain;
    *resolution = f.resolution;
    *mode = f.mode;
    *initial_mj = f.initial_mj;
    return FAKE_OK;
}

/* Busy-wait added to every NVML sensor read of this device (GetTotalEnergyConsumption,
 * GetPowerUsage, GetFieldValues), before the reading is taken. */
int fake_nvml_set_call_latency(int dev, long long ns)
{
    state_t *s;
    int rc = get_device(dev, &s);
    if (rc)
        return rc;
    if (ns < 0)
        return FAKE_EINVAL;
    atomic_store_explicit(&s->dev[dev].call_latency_ns, ns, memory_order_relaxed);
    return FAKE_OK;
}

static int set_power_impl(int dev, double watts, int tag, int64_t t, int at_now)
{
    state_t *s;
    int rc = get_device(dev, &s);
    if (rc)
        return rc;
    if (!isfinite(watts) || watts < 0 || tag < 0 || tag >= MAX_TAGS)
        return FAKE_EINVAL;
    device_t *d = &s->dev[dev];
    dev_lock(d);
    rc = append_event_locked(s, (unsigned)dev, t, watts, tag, at_now);
    dev_unlock(d);
    return rc;
}

/* Power level `watts` from now on (now clamped to the last event's time if that is later). */
int fake_nvml_set_power(int dev, double watts, int tag)
{
    return set_power_impl(dev, watts, tag, 0, 1);
}

/* Power level `watts` from t_ns on (may be in the future); t_ns >= the last event's time. */
int fake_nvml_set_power_at(int dev, double watts, int tag, long long t_ns)
{
    return set_power_impl(dev, watts, tag, t_ns, 0);
}

/* Exact integral of the true power over [t0, t1] in J (negative if t1 < t0). */
int fake_nvml_true_energy(int dev, long long t0_ns, long long t1_ns, double *joules)
{
    state_t *s;
    int rc = get_device(dev, &s);
    if (rc)
        return rc;
    energy_read_t r = {.t0 = t0_ns, .t1 = t1_ns};
    rc = with_view(s, (unsigned)dev, energy_read_fn, &r);
    *joules = r.nj / 1e9;
    return rc;
}

/* True energy (J) of the closed intervals spent at `tag`: an interval closes when the next event
 * is appended, so append a final level to count the last one. */
int fake_nvml_tag_energy(int dev, int tag, double *joules)
{
    state_t *s;
    int rc = get_device(dev, &s);
    if (rc)
        return rc;
    if (tag < 0 || tag >= MAX_TAGS)
        return FAKE_EINVAL;
    device_t *d = &s->dev[dev];
    dev_lock(d);
    *joules = d->tag_nj[tag] / 1e9;
    dev_unlock(d);
    return FAKE_OK;
}

/* What the energy field shows at t (mJ), regardless of its status. */
int fake_nvml_counter_at(int dev, long long t_ns, unsigned long long *millijoules)
{
    state_t *s;
    int rc = get_device(dev, &s);
    if (rc)
        return rc;
    int status;
    uint64_t v = 0;
    rc = read_sensor(s, (unsigned)dev, FIELD_ENERGY, t_ns, 0, &v, &status);
    *millijoules = v;
    return rc;
}

/* What a power field shows at t (mW), regardless of its status. */
int fake_nvml_power_at(int dev, int field, long long t_ns, unsigned int *milliwatts)
{
    state_t *s;
    int rc = get_device(dev, &s);
    if (rc)
        return rc;
    if (field != FIELD_POWER_INSTANT && field != FIELD_POWER_AVERAGE)
        return FAKE_EINVAL;
    int status;
    uint64_t v = 0;
    rc = read_sensor(s, (unsigned)dev, field, t_ns, 0, &v, &status);
    *milliwatts = (unsigned int)v;
    return rc;
}

static int grid_of(int dev, int field, grid_t *g)
{
    state_t *s;
    int rc = get_device(dev, &s);
    if (rc)
        return rc;
    if (!valid_field(field))
        return FAKE_EINVAL;
    device_t *d = &s->dev[dev];
    dev_lock(d);
    *g = field_grid(s, &d->model, (unsigned)dev, field);
    dev_unlock(d);
    return FAKE_OK;
}

/* Time at which update k of a field becomes visible: u_k + L. */
int fake_nvml_update_visible_at(int dev, int field, long long k, long long *t_ns)
{
    grid_t g;
    int rc = grid_of(dev, field, &g);
    if (rc)
        return rc;
    long long kp, t;
    if (__builtin_mul_overflow(k, (long long)g.P, &kp) || __builtin_add_overflow(kp, (long long)(g.c + g.L), &t))
        return FAKE_EINVAL;
    *t_ns = t;
    return FAKE_OK;
}

/* Index k of the update a read of the field at t shows (largest k with u_k + L <= t). */
int fake_nvml_update_index_at(int dev, int field, long long t_ns, long long *k)
{
    grid_t g;
    int rc = grid_of(dev, field, &g);
    if (rc)
        return rc;
    *k = grid_index_visible(&g, t_ns);
    return FAKE_OK;
}

/* Time from which the energy counter counts (last restart or reset). */
int fake_nvml_counter_origin(int dev, long long *t_ns)
{
    state_t *s;
    int rc = get_device(dev, &s);
    if (rc)
        return rc;
    device_t *d = &s->dev[dev];
    dev_lock(d);
    *t_ns = d->model.origin_ns;
    dev_unlock(d);
    return FAKE_OK;
}

typedef struct {
    int64_t t;
    double nj, masked_nj;
} origin_read_t;

static int origin_read_fn(view_t *v, void *arg)
{
    origin_read_t *r = arg;
    r->masked_nj = 0;
    return energy_at(v, r->t, &r->nj, field_is_windowed(&v->m) ? &r->masked_nj : NULL);
}

/* A driver reload: the counter restarts at 0 from now. */
int fake_nvml_reset_counter(int dev)
{
    state_t *s;
    int rc = get_device(dev, &s);
    if (rc)
        return rc;
    device_t *d = &s->dev[dev];
    origin_read_t r = {.t = realtime_ns()};
    dev_lock(d); /* no append or configuration change between reading E(now) and using it */
    rc = with_view(s, (unsigned)dev, origin_read_fn, &r);
    if (rc == FAKE_OK) {
        seq_begin(d);
        d->model.origin_ns = r.t;
        d->model.origin_nj = r.nj;
        d->model.origin_masked_nj = r.masked_nj;
        d->model.counter_base_mj = 0;
        seq_end(d);
    }
    dev_unlock(d);
    return rc;
}

/* Number of NVML reads of a field on a device (>= 0) or a negative error. */
long long fake_nvml_calls(int dev, int field)
{
    state_t *s;
    int rc = get_device(dev, &s);
    if (rc)
        return rc;
    if (!valid_field(field))
        return FAKE_EINVAL;
    return (long long)atomic_load_explicit(&s->dev[dev].calls[field], memory_order_relaxed);
}

/* 1 if an NVML read of the device hit an event-ring overrun since the state was created. */
int fake_nvml_overrun(int dev)
{
    state_t *s;
    int rc = get_device(dev, &s);
    return rc ? rc : atomic_load_explicit(&s->dev[dev].overrun, memory_order_relaxed);
}

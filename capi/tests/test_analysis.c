/* test_analysis.c: a tiny C11 engine serving `spectrum` through the C ABI (issue 14).
 *
 * One tap fed by the audio thread with a known sine (amplitude 0.5 at bin SINE_BIN of a 64-bin
 * spectrum at 48 kHz: 3 kHz); the analysis thread (main) reads the tap window, computes the
 * spectrum with a naive Hann-windowed DFT, and submits it. Every accepted submission is
 * printed on stdout as `SUBMIT <sample> <n> <v0> ... <vn-1>` (%.9g: exact f32 round trip) so
 * the Rust client test (capi/tests/analysis_c.rs) can check that the frames it receives carry
 * exactly the values submitted. `scope` requests are deliberately never served (the negative
 * control: a request never submitted must produce no frame); each new one is printed as
 * `SCOPE_REQUESTED` so the client knows it reached the engine.
 *
 * Before serving, the refusals are checked (exit 1 on any surprise): analysis_taps out of
 * range, the earlier config size (accepted, analysis then off), an unknown config size, take
 * twice, publish to a missing tap, an unknown read mode / tap, wrong struct sizes, an unknown
 * stream enum, a field out of range, the wrong value count, a request never issued (stale).
 *
 * usage: test_analysis SECONDS [serve-scope|misreport]   (prints the announcement line first)
 * The optional modes are the client test's negative controls: `serve-scope` also submits
 * scope values (min/max), `misreport` prints v0 + 1 dB instead of the value submitted. */
#define _POSIX_C_SOURCE 200809L /* clock_nanosleep, CLOCK_MONOTONIC under -std=c11 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loophole_ipc.h"
#include "loophole_ipc.h" /* included twice on purpose */

#define RATE 48000u
#define BLOCK 128u
#define SPECTRUM_BINS 64u
#define SINE_BIN 8u
#define SINE_AMP 0.5f
#define PI 3.14159265358979323846

static atomic_int running = 1;
static LoopholeAudio *g_audio;

#define EXPECT(cond, what)                                                  \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, what); \
            exit(1);                                                        \
        }                                                                   \
    } while (0)

static LoopholeOutcome apply_all(void *user, const LoopholeCommand *cmd) {
    (void)user;
    (void)cmd;
    LoopholeOutcome o = {LOOPHOLE_OUTCOME_APPLIED, 0};
    return o;
}

static void add_ns(struct timespec *t, long ns) {
    t->tv_nsec += ns;
    while (t->tv_nsec >= 1000000000L) {
        t->tv_nsec -= 1000000000L;
        t->tv_sec += 1;
    }
}

/* The simulated device: one block every BLOCK/RATE s on absolute deadlines. */
static void *audio_thread(void *arg) {
    (void)arg;
    static float block[BLOCK];
    uint64_t n = 0;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    const double w = 2.0 * PI * SINE_BIN / (2.0 * SPECTRUM_BINS);
    while (atomic_load(&running)) {
        loophole_audio_begin(g_audio, loophole_now_ns(), BLOCK);
        (void)loophole_audio_drain(g_audio, apply_all, NULL);
        for (uint32_t i = 0; i < BLOCK; ++i, ++n) block[i] = SINE_AMP * (float)sin(w * (double)n);
        const float *chans[1] = {block};
        loophole_audio_publish_meters(g_audio, chans, 1, BLOCK);
        if (loophole_audio_publish_tap(g_audio, 0, block, BLOCK) != LOOPHOLE_OK) abort();
        loophole_audio_end(g_audio, loophole_now_ns());
        add_ns(&next, (long)(1000000000ull * BLOCK / RATE));
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
    }
    return NULL;
}

/* dBFS per bin: a full-scale sine at a bin centre reads 0 dB. `window` holds 2*bins samples. */
static void naive_spectrum(const float *window, uint32_t bins, float *out) {
    const uint32_t n = 2 * bins;
    double wsum = 0.0;
    for (uint32_t i = 0; i < n; ++i) wsum += 0.5 - 0.5 * cos(2.0 * PI * i / n);
    for (uint32_t k = 0; k < bins; ++k) {
        double re = 0.0, im = 0.0;
        for (uint32_t i = 0; i < n; ++i) {
            const double x = window[i] * (0.5 - 0.5 * cos(2.0 * PI * i / n));
            re += x * cos(2.0 * PI * k * i / n);
            im -= x * sin(2.0 * PI * k * i / n);
        }
        const double mag = 2.0 * sqrt(re * re + im * im) / wsum;
        out[k] = (float)(20.0 * log10(mag > 1e-9 ? mag : 1e-9));
    }
}

static void check_refusals(void) {
    char err[256];
    LoopholeServer *s = NULL;
    LoopholeAudio *a = NULL;
    LoopholeControl *c = NULL;
    LoopholeAnalysis *an = NULL;
    LoopholeConfig cfg;
    EXPECT(loophole_config_init_sized(&cfg, sizeof cfg) == LOOPHOLE_OK, "config_init");
    EXPECT(cfg.analysis_taps == 0 && cfg.tap_capacity == 4096, "defaults");

    cfg.analysis_taps = LOOPHOLE_MAX_TAPS + 1;
    EXPECT(loophole_create(&cfg, &s, &a, &c, err, sizeof err) == LOOPHOLE_ERR_INVALID_ARGUMENT,
           "analysis_taps > LOOPHOLE_MAX_TAPS refused");
    EXPECT(s == NULL && strstr(err, "analysis_taps") != NULL, "with its reason");

    /* The first header's initialiser (kept for programs built against it) sets that header's
     * size: accepted, and the fields after it are not read (analysis stays off). */
    EXPECT(loophole_config_init(&cfg) == LOOPHOLE_OK, "the first header's config_init");
    cfg.analysis_taps = 1;
    EXPECT(loophole_create(&cfg, &s, &a, &c, err, sizeof err) == LOOPHOLE_OK, "the first header's size accepted");
    EXPECT(loophole_server_take_analysis(s, &an) == LOOPHOLE_ERR_NOT_CONFIGURED && an == NULL,
           "v1 config: analysis_taps not read, no analysis");
    EXPECT(loophole_audio_publish_tap(a, 0, NULL, 0) == LOOPHOLE_ERR_INVALID_ARGUMENT,
           "no taps: publish refused");
    loophole_server_free(s);
    loophole_control_free(c);
    loophole_audio_free(a);

    (void)loophole_config_init_sized(&cfg, sizeof cfg);
    cfg.struct_size = (uint32_t)sizeof cfg + 8;
    EXPECT(loophole_create(&cfg, &s, &a, &c, err, sizeof err) == LOOPHOLE_ERR_ABI_MISMATCH,
           "unknown config size refused");
    EXPECT(loophole_server_take_analysis(NULL, &an) == LOOPHOLE_ERR_NULL, "NULL server");
    EXPECT(loophole_server_take_analysis(s, NULL) == LOOPHOLE_ERR_NULL, "NULL out");

}

int main(int argc, char **argv) {
    const int seconds = argc > 1 ? atoi(argv[1]) : 3;
    const int serve_scope = argc > 2 && strcmp(argv[2], "serve-scope") == 0;
    const int misreport = argc > 2 && strcmp(argv[2], "misreport") == 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    check_refusals();

    char err[256] = {0};
    LoopholeConfig cfg;
    (void)loophole_config_init_sized(&cfg, sizeof cfg);
    cfg.analysis_taps = 1;
    cfg.meter_channels = 1;
    cfg.sample_rate = RATE;
    cfg.block_size = BLOCK;
    LoopholeServer *server = NULL;
    LoopholeControl *control = NULL;
    LoopholeAnalysis *an = NULL;
    if (loophole_create(&cfg, &server, &g_audio, &control, err, sizeof err) != LOOPHOLE_OK) {
        fprintf(stderr, "create: %s\n", err);
        return 1;
    }
    EXPECT(loophole_server_take_analysis(server, &an) == LOOPHOLE_OK && an != NULL, "take");
    LoopholeAnalysis *again = (LoopholeAnalysis *)1;
    EXPECT(loophole_server_take_analysis(server, &again) == LOOPHOLE_ERR_NOT_CONFIGURED &&
               again == NULL,
           "taken once only");

    /* Refusals on the live handles. */
    float buf[8192];
    LoopholeTapRead info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    EXPECT(loophole_audio_publish_tap(g_audio, 1, buf, 16) == LOOPHOLE_ERR_INVALID_ARGUMENT,
           "publish to a missing tap");
    EXPECT(loophole_audio_publish_tap(g_audio, 0, NULL, 16) == LOOPHOLE_ERR_NULL, "NULL block");
    EXPECT(loophole_analysis_read_tap(an, 0, 7, buf, 16, &info) == LOOPHOLE_ERR_INVALID_ARGUMENT,
           "unknown read mode");
    EXPECT(loophole_analysis_read_tap(an, 1, LOOPHOLE_TAP_LATEST, buf, 16, &info) ==
               LOOPHOLE_ERR_INVALID_ARGUMENT,
           "read a missing tap");
    info.struct_size = 4;
    EXPECT(loophole_analysis_read_tap(an, 0, LOOPHOLE_TAP_LATEST, buf, 16, &info) ==
               LOOPHOLE_ERR_ABI_MISMATCH,
           "short LoopholeTapRead");
    info.struct_size = sizeof info;
    EXPECT(loophole_analysis_read_tap(an, 0, LOOPHOLE_TAP_NEXT, buf, 16, &info) == LOOPHOLE_OK &&
               info.samples == 0,
           "nothing published yet");
    LoopholeAnalysisRequest reqs[LOOPHOLE_MAX_ANALYSIS_REQUESTS];
    size_t count = 99;
    EXPECT(loophole_analysis_requests(an, reqs, LOOPHOLE_MAX_ANALYSIS_REQUESTS, 4, &count) ==
               LOOPHOLE_ERR_ABI_MISMATCH,
           "wrong element size");
    EXPECT(loophole_analysis_requests(an, reqs, LOOPHOLE_MAX_ANALYSIS_REQUESTS, sizeof reqs[0],
                                      &count) == LOOPHOLE_OK &&
               count == 0,
           "no client: no request");
    LoopholeAnalysisRequest fake = {sizeof(LoopholeAnalysisRequest), 0, LOOPHOLE_ANALYSIS_SPECTRUM,
                                    0, SPECTRUM_BINS, 30, 1, SPECTRUM_BINS};
    EXPECT(loophole_analysis_submit(an, &fake, 0, 0, RATE, buf, SPECTRUM_BINS) ==
               LOOPHOLE_ERR_STALE,
           "a request never issued is stale");
    LoopholeAnalysisRequest bad = fake;
    bad.stream = 7;
    EXPECT(loophole_analysis_submit(an, &bad, 0, 0, RATE, buf, SPECTRUM_BINS) ==
               LOOPHOLE_ERR_INVALID_ARGUMENT,
           "unknown stream enum");
    bad = fake;
    bad.tap = 70000;
    EXPECT(loophole_analysis_submit(an, &bad, 0, 0, RATE, buf, SPECTRUM_BINS) ==
               LOOPHOLE_ERR_INVALID_ARGUMENT,
           "tap out of range");
    bad = fake;
    bad.slot = LOOPHOLE_MAX_ANALYSIS_REQUESTS;
    EXPECT(loophole_analysis_submit(an, &bad, 0, 0, RATE, buf, SPECTRUM_BINS) ==
               LOOPHOLE_ERR_INVALID_ARGUMENT,
           "slot out of range");
    EXPECT(loophole_analysis_submit(an, &fake, 0, 0, RATE, buf, SPECTRUM_BINS - 1) ==
               LOOPHOLE_ERR_WRONG_LENGTH,
           "wrong value count");
    bad = fake;
    bad.struct_size = 4;
    EXPECT(loophole_analysis_submit(an, &bad, 0, 0, RATE, buf, SPECTRUM_BINS) ==
               LOOPHOLE_ERR_ABI_MISMATCH,
           "short request struct");
    EXPECT(strcmp(loophole_status_str(LOOPHOLE_ERR_WRONG_LENGTH),
                  "wrong number of values for this analysis request") == 0,
           "status string");
    fprintf(stderr, "ok: every refusal has its status code\n");

    char line[512];
    EXPECT(loophole_server_announcement(server, line, sizeof line, NULL) == LOOPHOLE_OK, "ann");
    printf("%s\n", line);

    pthread_t audio;
    EXPECT(pthread_create(&audio, NULL, audio_thread, NULL) == 0, "audio thread");

    /* The analysis thread. */
    static float window[2 * 4096];
    static float out[4096];
    int scope_seen = 0, wrong_checked = 0;
    int64_t scope_gen[LOOPHOLE_MAX_ANALYSIS_REQUESTS]; /* last generation announced, per slot */
    for (size_t i = 0; i < LOOPHOLE_MAX_ANALYSIS_REQUESTS; ++i) scope_gen[i] = -1;
    unsigned submitted = 0;
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec >= seconds || !loophole_analysis_is_connected(an)) break;
        int rc = loophole_analysis_requests(an, reqs, LOOPHOLE_MAX_ANALYSIS_REQUESTS,
                                            sizeof reqs[0], &count);
        EXPECT(rc == LOOPHOLE_OK, "requests");
        for (size_t r = 0; r < count; ++r) {
            const LoopholeAnalysisRequest *q = &reqs[r];
            if (q->stream == LOOPHOLE_ANALYSIS_SCOPE) {
                EXPECT(q->slot < LOOPHOLE_MAX_ANALYSIS_REQUESTS, "slot");
                if (scope_gen[q->slot] != (int64_t)q->generation) /* once per subscription */
                    printf("SCOPE_REQUESTED %u\n", q->size);
                scope_gen[q->slot] = (int64_t)q->generation;
                scope_seen = 1;
                if (!serve_scope) continue; /* never served: the negative control */
                rc = loophole_analysis_read_tap(an, q->tap, LOOPHOLE_TAP_LATEST, window,
                                                q->size, &info);
                EXPECT(rc == LOOPHOLE_OK, "read_tap");
                for (uint32_t k = 0; k < q->size; ++k) { /* one sample per point */
                    out[k] = k < info.samples ? window[k] : 0.0f;
                    out[q->size + k] = out[k];
                }
                rc = loophole_analysis_submit(an, q, info.first + info.samples, 0, 1, out,
                                              q->values);
                EXPECT(rc == LOOPHOLE_OK || rc == LOOPHOLE_ERR_STALE, loophole_status_str(rc));
                continue;
            }
            EXPECT(q->stream == LOOPHOLE_ANALYSIS_SPECTRUM && q->values == q->size, "request");
            const size_t n = 2u * q->size;
            rc = loophole_analysis_read_tap(an, q->tap, LOOPHOLE_TAP_LATEST, window, n, &info);
            EXPECT(rc == LOOPHOLE_OK, "read_tap");
            if (info.samples < n) continue;
            naive_spectrum(window, q->size, out);
            if (!wrong_checked) { /* a live request, malformed submissions: refused, no frame */
                LoopholeAnalysisRequest w = *q;
                w.stream = 9;
                EXPECT(loophole_analysis_submit(an, &w, 1, 0, RATE, out, q->size) ==
                           LOOPHOLE_ERR_INVALID_ARGUMENT,
                       "live request, bad enum");
                EXPECT(loophole_analysis_submit(an, q, 1, 0, RATE, out, q->size + 1) ==
                           LOOPHOLE_ERR_WRONG_LENGTH,
                       "live request, wrong length");
                wrong_checked = 1;
            }
            const uint64_t last = info.first + info.samples - 1;
            rc = loophole_analysis_submit(an, q, last, info.missed, RATE, out, q->size);
            if (rc == LOOPHOLE_ERR_STALE) continue;
            EXPECT(rc == LOOPHOLE_OK, loophole_status_str(rc));
            ++submitted;
            printf("SUBMIT %llu %u", (unsigned long long)last, q->size);
            for (uint32_t k = 0; k < q->size; ++k)
                printf(" %.9g", (double)out[k] + (misreport && k == 0 ? 1.0 : 0.0));
            printf("\n");
        }
        struct timespec nap = {0, 10 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
    atomic_store(&running, 0);
    pthread_join(audio, NULL);
    fprintf(stderr, "ok: %u spectrum values submitted, scope requested: %d\n", submitted,
            scope_seen);
    EXPECT(loophole_server_shutdown(server) == LOOPHOLE_OK, "shutdown");
    EXPECT(!loophole_analysis_is_connected(an), "the network thread is gone after shutdown");
    loophole_analysis_free(an);
    loophole_server_free(server);
    loophole_audio_free(g_audio);
    loophole_control_free(control);
    return 0;
}

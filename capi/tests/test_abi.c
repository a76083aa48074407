/*
 * The C ABI test: every export of loophole_ipc.h, driven end to end by a minimal client.
 * Built as C11 (-std=c11) and as C++17 (-x c++): both must pass. The header is included twice.
 */
#define _DEFAULT_SOURCE
#include "loophole_ipc.h"
#include "loophole_ipc.h" /* twice: the include guard must hold */

#include <math.h>
#include <time.h>

#include "mini_client.h"

static int failures = 0;
#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                              \
        }                                                                            \
    } while (0)

static void sleep_ms(long ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

/* The test engine's command handler (the C drain callback). */
typedef struct engine {
    int calls;
    int playing;
    uint64_t position;
    float bpm;
    float freq;
    int bad_fields;
} engine;

static LoopholeOutcome apply(void *user, const LoopholeCommand *cmd) {
    engine *e = (engine *)user;
    LoopholeOutcome o;
    o.kind = LOOPHOLE_OUTCOME_APPLIED;
    o.value = 0;
    e->calls++;
    if (cmd->struct_size < sizeof(LoopholeCommand)) e->bad_fields++;
    switch (cmd->op) {
    case LOOPHOLE_OP_PLAY: e->playing = 1; break;
    case LOOPHOLE_OP_STOP: e->playing = 0; break;
    case LOOPHOLE_OP_SEEK:
        if (cmd->position != 4800) e->bad_fields++;
        e->position = cmd->position;
        break;
    case LOOPHOLE_OP_LOOP:
        if (cmd->loop_start != 0 || cmd->loop_end != 96000 || cmd->loop_enabled != 1)
            e->bad_fields++;
        break;
    case LOOPHOLE_OP_TEMPO:
        /* An invalid outcome kind: the library must answer `unsupported` and count it. */
        o.kind = 77;
        break;
    case LOOPHOLE_OP_PARAM_SET:
        if (cmd->node != 1) {
            o.kind = LOOPHOLE_OUTCOME_REJECTED;
            o.value = LOOPHOLE_REJECT_UNKNOWN_NODE;
        } else {
            if (cmd->param != 0 || cmd->value != 330.0f || cmd->ramp_ms != 20.0f) e->bad_fields++;
            e->freq = cmd->value;
            o.kind = LOOPHOLE_OUTCOME_APPLIED_AT;
            o.value = 5;
        }
        break;
    default: e->bad_fields++; break;
    }
    return o;
}

static const char *const COMMANDS[] = {
    "{\"type\":\"command\",\"name\":\"hello\",\"id\":1,\"body\":{\"protocol\":1,\"client\":\"capi-c-test\"}}",
    "{\"type\":\"command\",\"name\":\"telemetry.subscribe\",\"id\":2,\"body\":{\"stream\":\"meters\",\"rate_hz\":100}}",
    "{\"type\":\"command\",\"name\":\"telemetry.subscribe\",\"id\":15,\"body\":{\"stream\":\"transport.state\",\"rate_hz\":100}}",
    "{\"type\":\"command\",\"name\":\"transport.play\",\"id\":3,\"body\":{}}",
    "{\"type\":\"command\",\"name\":\"param.set\",\"id\":4,\"body\":{\"node\":99,\"param\":0,\"value\":1}}",
    "{\"type\":\"command\",\"name\":\"transport.tempo\",\"id\":5,\"body\":{\"bpm\":140}}",
    "{\"type\":\"command\",\"name\":\"param.set\",\"id\":6,\"body\":{\"node\":1,\"param\":0,\"value\":330,\"ramp_ms\":20}}",
    "{\"type\":\"command\",\"name\":\"ping\",\"id\":7,\"body\":{\"nonce\":9,\"rt\":true}}",
    "{\"type\":\"command\",\"name\":\"graph.add_node\",\"id\":8,\"body\":{\"node\":10,\"kind\":\"osc\"}}",
    "{\"type\":\"command\",\"name\":\"graph.remove_node\",\"id\":9,\"body\":{\"node\":42}}",
    "{\"type\":\"command\",\"name\":\"graph.connect\",\"id\":10,\"body\":{\"from\":1,\"from_port\":0,\"to\":10,\"to_port\":1}}",
    "{\"type\":\"command\",\"name\":\"transport.seek\",\"id\":11,\"body\":{\"sample\":4800}}",
    "{\"type\":\"command\",\"name\":\"transport.loop\",\"id\":12,\"body\":{\"start\":0,\"end\":96000,\"enabled\":true}}",
    "{\"type\":\"command\",\"name\":\"transport.stop\",\"id\":13,\"body\":{}}",
};

/* Answers one control request; records what it saw. */
static void control_step(LoopholeControl *control, int *seen_add, int *shutdown_ticket_done) {
    LoopholeControlRequest req;
    int32_t rc;
    memset(&req, 0, sizeof req);
    req.struct_size = sizeof req;
    rc = loophole_control_recv(control, 0, &req);
    if (rc == LOOPHOLE_ERR_TIMEOUT) return;
    CHECK(rc == LOOPHOLE_OK);
    if (rc != LOOPHOLE_OK) return;
    CHECK(req.ticket != 0);
    switch (req.op) {
    case LOOPHOLE_CONTROL_ADD_NODE:
        CHECK(req.node == 10 && strcmp(req.kind, "osc") == 0 && req.id == 8);
        CHECK(loophole_control_reply(control, req.ticket, LOOPHOLE_CONTROL_RESULT_OK) == LOOPHOLE_OK);
        /* A second reply to the same ticket is refused, not sent twice. */
        CHECK(loophole_control_reply(control, req.ticket, LOOPHOLE_CONTROL_RESULT_OK) ==
              LOOPHOLE_ERR_UNKNOWN_TICKET);
        *seen_add = 1;
        break;
    case LOOPHOLE_CONTROL_REMOVE_NODE:
        CHECK(req.node == 42);
        CHECK(loophole_control_reply(control, req.ticket, LOOPHOLE_CONTROL_RESULT_UNKNOWN_NODE) ==
              LOOPHOLE_OK);
        break;
    case LOOPHOLE_CONTROL_CONNECT:
        CHECK(req.from == 1 && req.from_port == 0 && req.to == 10 && req.to_port == 1);
        /* An unknown result code is refused and answers nothing; then the real answer. */
        CHECK(loophole_control_reply(control, req.ticket, 99) == LOOPHOLE_ERR_INVALID_ARGUMENT);
        CHECK(loophole_control_reply(control, req.ticket, LOOPHOLE_CONTROL_RESULT_OK) == LOOPHOLE_OK);
        break;
    case LOOPHOLE_CONTROL_SHUTDOWN:
        CHECK(loophole_control_reply(control, req.ticket, LOOPHOLE_CONTROL_RESULT_OK) == LOOPHOLE_OK);
        *shutdown_ticket_done = 1;
        break;
    default:
        CHECK(!"unexpected control op");
        break;
    }
}

/* One simulated audio callback through every audio export. */
static void audio_callback(LoopholeAudio *audio, engine *e, uint32_t frames, float *left,
                           float *right, float *inter) {
    const float *planar[2];
    LoopholeTransport t;
    uint32_t i;
    loophole_audio_begin(audio, loophole_now_ns(), frames);
    (void)loophole_audio_drain(audio, apply, e);
    for (i = 0; i < frames; i++) {
        float x = e->playing ? 0.5f * sinf(0.1f * (float)i) : 0.0f;
        left[i] = right[i] = x;
        inter[2 * i] = inter[2 * i + 1] = x;
    }
    planar[0] = left;
    planar[1] = right;
    loophole_audio_publish_meters(audio, planar, 2, frames);
    loophole_audio_publish_meters_interleaved(audio, inter, 2, frames);
    loophole_audio_publish_levels(audio, 0, e->playing ? 0.5f : 0.0f, 0.0, frames);
    loophole_transport_init(&t);
    t.playing = (uint8_t)e->playing;
    t.position = e->position;
    (void)loophole_audio_publish_transport(audio, &t);
    loophole_audio_end(audio, loophole_now_ns());
}

static void test_errors(void) {
    LoopholeConfig cfg;
    LoopholeServer *s = (LoopholeServer *)1;
    LoopholeAudio *a = (LoopholeAudio *)1;
    LoopholeControl *c = (LoopholeControl *)1;
    char err[256];
    CHECK(loophole_abi_version() == LOOPHOLE_IPC_ABI_VERSION);
    CHECK(strcmp(loophole_status_str(LOOPHOLE_OK), "ok") == 0);
    {
        int32_t code;
        for (code = LOOPHOLE_ERR_NOT_CONFIGURED; code <= LOOPHOLE_ERR_NULL; code++)
            CHECK(strcmp(loophole_status_str(code), "unknown status") != 0);
        CHECK(strcmp(loophole_status_str(12345), "unknown status") == 0);
        CHECK(strcmp(loophole_status_str(LOOPHOLE_ERR_NOT_CONFIGURED - 1), "unknown status") == 0);
    }
    CHECK(loophole_config_init(NULL) == LOOPHOLE_ERR_NULL);
    CHECK(loophole_transport_init(NULL) == LOOPHOLE_ERR_NULL);
    CHECK(loophole_config_init_sized(NULL, sizeof cfg) == LOOPHOLE_ERR_NULL);
    /* An unknown size writes nothing; the first header's initialiser writes only its fields. */
    memset(&cfg, 0x5a, sizeof cfg);
    CHECK(loophole_config_init_sized(&cfg, sizeof cfg + 8) == LOOPHOLE_ERR_ABI_MISMATCH);
    CHECK(cfg.struct_size == 0x5a5a5a5au && cfg.tap_capacity == 0x5a5a5a5au);
    CHECK(loophole_config_init(&cfg) == LOOPHOLE_OK);
    CHECK(cfg.struct_size < sizeof cfg && cfg.struct_size >= offsetof(LoopholeConfig, analysis_taps));
    CHECK(cfg.sample_rate == 48000 && cfg.analysis_taps == 0x5a5a5a5au && cfg.tap_capacity == 0x5a5a5a5au);
    CHECK(loophole_config_init_sized(&cfg, sizeof cfg) == LOOPHOLE_OK);
    CHECK(cfg.struct_size == sizeof cfg && cfg.abi_version == LOOPHOLE_IPC_ABI_VERSION);
    CHECK(cfg.analysis_taps == 0 && cfg.tap_capacity == 4096);

    /* The runtime ABI check at create. */
    cfg.abi_version = LOOPHOLE_IPC_ABI_VERSION + 1;
    err[0] = 0;
    CHECK(loophole_create(&cfg, &s, &a, &c, err, sizeof err) == LOOPHOLE_ERR_ABI_MISMATCH);
    CHECK(s == NULL && a == NULL && c == NULL && strstr(err, "ABI") != NULL);
    loophole_config_init_sized(&cfg, sizeof cfg);
    cfg.struct_size = 8;
    CHECK(loophole_create(&cfg, &s, &a, &c, NULL, 0) == LOOPHOLE_ERR_ABI_MISMATCH);

    loophole_config_init_sized(&cfg, sizeof cfg);
    cfg.meter_channels = 0;
    CHECK(loophole_create(&cfg, &s, &a, &c, err, sizeof err) == LOOPHOLE_ERR_INVALID_ARGUMENT);
    CHECK(strstr(err, "meter_channels") != NULL);
    loophole_config_init_sized(&cfg, sizeof cfg);
    cfg.meter_channels = LOOPHOLE_MAX_METER_CHANNELS + 1;
    CHECK(loophole_create(&cfg, &s, &a, &c, err, sizeof err) == LOOPHOLE_ERR_INVALID_ARGUMENT);
    loophole_config_init_sized(&cfg, sizeof cfg);
    cfg.host = "not-an-ip";
    CHECK(loophole_create(&cfg, &s, &a, &c, err, 4) == LOOPHOLE_ERR_INVALID_ARGUMENT);
    CHECK(strlen(err) == 3); /* truncated to the caller's buffer, NUL-terminated */
    loophole_config_init_sized(&cfg, sizeof cfg);
    cfg.port = 5000;
    cfg.port_range_last = 4000;
    CHECK(loophole_create(&cfg, &s, &a, &c, err, sizeof err) == LOOPHOLE_ERR_INVALID_ARGUMENT);
    loophole_config_init_sized(&cfg, sizeof cfg);
    cfg.drain_budget = 0;
    CHECK(loophole_create(&cfg, &s, &a, &c, err, sizeof err) == LOOPHOLE_ERR_INVALID_ARGUMENT);
    CHECK(loophole_create(NULL, &s, &a, &c, err, sizeof err) == LOOPHOLE_ERR_NULL);
    CHECK(loophole_create(&cfg, NULL, &a, &c, err, sizeof err) == LOOPHOLE_ERR_NULL);

    /* A taken port: LOOPHOLE_ERR_CANNOT_START with a reason. */
    loophole_config_init_sized(&cfg, sizeof cfg);
    CHECK(loophole_create(&cfg, &s, &a, &c, err, sizeof err) == LOOPHOLE_OK);
    {
        LoopholeServer *s2;
        LoopholeAudio *a2;
        LoopholeControl *c2;
        LoopholeConfig cfg2;
        loophole_config_init_sized(&cfg2, sizeof cfg2);
        cfg2.port = loophole_server_port(s);
        err[0] = 0;
        CHECK(loophole_create(&cfg2, &s2, &a2, &c2, err, sizeof err) == LOOPHOLE_ERR_CANNOT_START);
        CHECK(err[0] != 0 && s2 == NULL);
        fprintf(stderr, "taken port refused: %s\n", err);
    }
    /* Free in the "wrong" order: control, server, then audio. Defined, not undefined. */
    loophole_control_free(c);
    loophole_server_free(s);
    loophole_audio_free(a);

    /* NULL handles: neutral results, never a crash. */
    loophole_audio_begin(NULL, 0, 64);
    CHECK(loophole_audio_drain(NULL, apply, NULL) == 0);
    loophole_audio_publish_meters(NULL, NULL, 0, 0);
    loophole_audio_publish_meters_interleaved(NULL, NULL, 0, 0);
    loophole_audio_publish_levels(NULL, 0, 0.f, 0.0, 0);
    CHECK(!loophole_audio_publish_transport(NULL, NULL));
    loophole_audio_report_xrun(NULL);
    loophole_audio_end(NULL, 0);
    loophole_audio_set_sample_rate(NULL, 44100);
    CHECK(loophole_audio_stats(NULL, NULL) == LOOPHOLE_ERR_NULL);
    CHECK(loophole_server_port(NULL) == 0);
    CHECK(!loophole_server_is_running(NULL) && !loophole_server_has_client(NULL));
    CHECK(loophole_server_shutdown(NULL) == LOOPHOLE_ERR_NULL);
    CHECK(loophole_server_announcement(NULL, err, sizeof err, NULL) == LOOPHOLE_ERR_NULL);
    CHECK(loophole_control_recv(NULL, 0, NULL) == LOOPHOLE_ERR_NULL);
    CHECK(loophole_control_reply(NULL, 1, 0) == LOOPHOLE_ERR_NULL);
    CHECK(!loophole_control_is_orphaned(NULL));
    loophole_server_free(NULL);
    loophole_audio_free(NULL);
    loophole_control_free(NULL);
}

static void test_session(void) {
    LoopholeConfig cfg;
    LoopholeServer *server;
    LoopholeAudio *audio;
    LoopholeControl *control;
    LoopholeAudioStats st;
    LoopholeTransport t;
    char line[512], err[256];
    size_t len = 0;
    engine e;
    mini_client *mc = (mini_client *)calloc(1, sizeof(mini_client));
    float left[64], right[64], inter[128];
    uint64_t t0, callbacks = 0;
    int seen_add = 0, shutdown_done = 0, i, all;

    memset(&e, 0, sizeof e);
    loophole_config_init_sized(&cfg, sizeof cfg);
    cfg.engine_name = "capi-c-test";
    cfg.drain_budget = 4;
    cfg.block_size = 64;
    CHECK(loophole_create(&cfg, &server, &audio, &control, err, sizeof err) == LOOPHOLE_OK);

    CHECK(loophole_server_announcement(server, line, 8, &len) == LOOPHOLE_ERR_BUFFER_TOO_SMALL);
    CHECK(len > 16);
    CHECK(loophole_server_announcement(server, line, sizeof line, &len) == LOOPHOLE_OK);
    CHECK(strncmp(line, "LOOPHOLE_LISTEN {", 17) == 0 && strlen(line) == len);
    CHECK(loophole_server_port(server) != 0);
    CHECK(loophole_server_is_running(server));
    CHECK(!loophole_server_has_client(server));
    CHECK(!loophole_control_is_orphaned(control));
    loophole_audio_set_sample_rate(audio, 48000);

    t0 = loophole_now_ns();
    CHECK(loophole_now_ns() >= t0);

    /* Struct-size checks on caller-sized structs. */
    memset(&st, 0, sizeof st);
    st.struct_size = 4;
    CHECK(loophole_audio_stats(audio, &st) == LOOPHOLE_ERR_ABI_MISMATCH);
    {
        LoopholeControlRequest small;
        memset(&small, 0, sizeof small);
        small.struct_size = 4;
        CHECK(loophole_control_recv(control, 0, &small) == LOOPHOLE_ERR_ABI_MISMATCH);
    }
    loophole_transport_init(&t);
    t.bpm = NAN; /* an engine fault: published, sent as bpm 0 (envelope.md, transport.state) */
    CHECK(loophole_audio_publish_transport(audio, &t));
    loophole_transport_init(&t);
    t.struct_size = 0;
    CHECK(!loophole_audio_publish_transport(audio, &t));

    CHECK(mc_connect(mc, loophole_server_port(server)) == 0);
    for (i = 0; i < (int)(sizeof COMMANDS / sizeof COMMANDS[0]); i++) CHECK(mc_send(mc, COMMANDS[i]) == 0);

    all = 0;
    while (!all && loophole_now_ns() - t0 < 10000000000ULL) {
        audio_callback(audio, &e, 64, left, right, inter);
        callbacks++;
        if (callbacks == 3) loophole_audio_report_xrun(audio);
        control_step(control, &seen_add, &shutdown_done);
        mc_poll(mc);
        all = mc->meters > 0 && mc->transport > 0;
        for (i = 3; i <= 13; i++) all = all && mc->answers[i].kind != 0;
        if (loophole_server_has_client(server)) all = all && 1;
        sleep_ms(1);
    }
    CHECK(all);
    CHECK(mc->answers[1].kind == 'a');
    CHECK(mc->answers[3].kind == 'a');
    CHECK(mc->answers[4].kind == 'e' && strcmp(mc->answers[4].code, "unknown_node") == 0);
    CHECK(mc->answers[5].kind == 'e' && strcmp(mc->answers[5].code, "unsupported") == 0);
    CHECK(mc->answers[6].kind == 'a');
    CHECK(mc->answers[7].kind == 'p');
    CHECK(mc->answers[8].kind == 'a' && seen_add);
    CHECK(mc->answers[9].kind == 'e' && strcmp(mc->answers[9].code, "unknown_node") == 0);
    CHECK(mc->answers[10].kind == 'a');
    CHECK(mc->answers[11].kind == 'a' && mc->answers[12].kind == 'a' && mc->answers[13].kind == 'a');
    for (i = 1; i <= 15; i++) CHECK(mc->answers[i].count <= 1);
    CHECK(loophole_server_has_client(server));
    CHECK(e.bad_fields == 0);
    CHECK(e.calls == 7); /* 9 audio commands, minus the rt ping, minus... the ping never reaches */

    st.struct_size = sizeof st;
    CHECK(loophole_audio_stats(audio, &st) == LOOPHOLE_OK);
    CHECK(st.invalid_outcomes == 1);
    CHECK(st.sample_clock == callbacks * 64);
    CHECK(st.block_start == (callbacks - 1) * 64);
    CHECK(st.net_gone == 0);

    /* engine.shutdown through the control route, then the server stops. */
    CHECK(mc_send(mc, "{\"type\":\"command\",\"name\":\"engine.shutdown\",\"id\":14,\"body\":{}}") == 0);
    while (!shutdown_done && loophole_now_ns() - t0 < 15000000000ULL) {
        audio_callback(audio, &e, 64, left, right, inter);
        control_step(control, &seen_add, &shutdown_done);
        sleep_ms(1);
    }
    CHECK(shutdown_done);
    CHECK(loophole_server_shutdown(server) == LOOPHOLE_OK);
    CHECK(loophole_server_shutdown(server) == LOOPHOLE_OK); /* idempotent */
    CHECK(!loophole_server_is_running(server));
    for (i = 0; i < 200 && !(mc->answers[14].kind && mc->goodbye); i++) {
        mc_poll(mc);
        sleep_ms(5);
    }
    CHECK(mc->answers[14].kind == 'a');
    CHECK(mc->goodbye == 1);
    {
        LoopholeControlRequest req;
        memset(&req, 0, sizeof req);
        req.struct_size = sizeof req;
        CHECK(loophole_control_recv(control, 10, &req) == LOOPHOLE_ERR_SERVER_GONE);
    }
    CHECK(loophole_server_announcement(server, line, sizeof line, NULL) == LOOPHOLE_OK);
    /* The audio side keeps working without the network side, never blocks. */
    audio_callback(audio, &e, 64, left, right, inter);
    st.struct_size = sizeof st;
    CHECK(loophole_audio_stats(audio, &st) == LOOPHOLE_OK && st.net_gone == 1);

    mc_close(mc);
    free(mc);
    loophole_audio_free(audio);
    loophole_control_free(control);
    loophole_server_free(server);
}

int main(void) {
    test_errors();
    test_session();
    if (failures) {
        fprintf(stderr, "test_abi: %d check(s) failed\n", failures);
        return 1;
    }
    printf("test_abi (%s): all checks passed\n",
#ifdef __cplusplus
           "C++"
#else
           "C11"
#endif
    );
    return 0;
}

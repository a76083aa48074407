// The C++17 wrapper test: every member of loophole_ipc.hpp, driven by the mini client.
// Both headers are included twice. operator new is replaced to show that the audio path of the
// wrapper (ScopedCallback, drain with capturing lambdas and functors) allocates nothing.
#include "loophole_ipc.hpp"
#include "loophole_ipc.hpp"
#include "loophole_ipc.h"

#include <sys/wait.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <thread>

#include "mini_client.h"

static std::atomic<long> g_news{0};
void* operator new(std::size_t n) {
    g_news.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

static int failures = 0;
#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                              \
        }                                                                            \
    } while (0)

static_assert(!std::is_copy_constructible_v<loophole::AudioEndpoint>, "move-only");
static_assert(!std::is_copy_assignable_v<loophole::Server>, "move-only");
static_assert(std::is_nothrow_move_constructible_v<loophole::Control>, "noexcept move");
static_assert(!std::is_move_constructible_v<loophole::ScopedCallback<>>, "scoped");

namespace {

struct Engine {
    bool playing = false;
    float gain = 0.5f;
    int calls = 0;
};

// A functor drain target (a JUCE engine might pass `*this`).
struct Handler {
    Engine& e;
    LoopholeOutcome operator()(const LoopholeCommand& cmd) noexcept {
        e.calls++;
        switch (cmd.op) {
        case LOOPHOLE_OP_PLAY: e.playing = true; return loophole::applied();
        case LOOPHOLE_OP_STOP: e.playing = false; return loophole::applied();
        case LOOPHOLE_OP_PARAM_SET:
            if (cmd.node != 2) return loophole::rejected(loophole::Reject::UnknownNode);
            if (cmd.value > 4.0f) return loophole::rejected(loophole::Reject::OutOfRange);
            e.gain = cmd.value;
            return loophole::appliedAt(3);
        default: return loophole::rejected(loophole::Reject::Unsupported);
        }
    }
};

// A tiny clock for ScopedCallback<Clock>: the host's own monotonic clock.
struct HostClock {
    std::uint64_t operator()() const noexcept { return loophole::nowNs(); }
};

const char* const kCommands[] = {
    R"({"type":"command","name":"hello","id":1,"body":{"protocol":1,"client":"capi-cpp-test"}})",
    R"({"type":"command","name":"telemetry.subscribe","id":2,"body":{"stream":"meters","rate_hz":100}})",
    R"({"type":"command","name":"transport.play","id":3,"body":{}})",
    R"({"type":"command","name":"param.set","id":4,"body":{"node":2,"param":0,"value":0.25}})",
    R"({"type":"command","name":"param.set","id":5,"body":{"node":2,"param":0,"value":9}})",
    R"({"type":"command","name":"param.set","id":6,"body":{"node":7,"param":0,"value":1}})",
    R"({"type":"command","name":"transport.tempo","id":7,"body":{"bpm":100}})",
    R"({"type":"command","name":"graph.add_node","id":8,"body":{"node":4,"kind":"gain"}})",
    R"({"type":"command","name":"transport.stop","id":9,"body":{}})",
};

void testThrowingCallableTerminates(loophole::AudioEndpoint& audio) {
    // Negative control of the noexcept trampoline: in a child, a callable that throws while a
    // command is drained must end the process with std::terminate (SIGABRT), never unwind into
    // the library. The child has its own copy of the endpoint's memory.
    std::fflush(nullptr);
    pid_t pid = fork();
    if (pid == 0) {
        for (int i = 0; i < 2000; i++) {
            loophole::ScopedCallback<> cb(audio, 64);
            cb.drain([](const LoopholeCommand&) -> LoopholeOutcome {
                throw std::runtime_error("must not unwind into Rust");
            });
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        std::_Exit(0);  // no command arrived: the control would prove nothing
    }
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
}

// The analysis surface: Analysis (RAII), takeAnalysis, publishTap, readTap, requests, submit,
// each refusal with its status; the audio side's publishTap allocates nothing.
void testAnalysis(loophole::Server& plain) {
    loophole::Analysis none;
    CHECK(loophole::takeAnalysis(plain, none) == loophole::Status::NotConfigured && !none);

    loophole::Config cfg;
    cfg.analysis_taps = 1;
    loophole::Server server;
    loophole::AudioEndpoint audio;
    loophole::Control control;
    CHECK(loophole::create(cfg, server, audio, control) == loophole::Status::Ok);
    loophole::Analysis an;
    CHECK(loophole::takeAnalysis(server, an) == loophole::Status::Ok && an);
    loophole::Analysis twice;
    CHECK(loophole::takeAnalysis(server, twice) == loophole::Status::NotConfigured && !twice);
    static_assert(!std::is_copy_constructible_v<loophole::Analysis>, "move-only");

    float block[64];
    for (int i = 0; i < 64; ++i) block[i] = static_cast<float>(i) / 64.0f;
    const long news = g_news.load();
    CHECK(audio.publishTap(0, block, 64) == loophole::Status::Ok);
    CHECK(audio.publishTap(1, block, 64) == loophole::Status::InvalidArgument);
    CHECK(g_news.load() == news);  // the audio side allocated nothing

    float window[128] = {};
    LoopholeTapRead info{};
    CHECK(an.readTap(0, loophole::TapMode::Latest, window, 128, info) == loophole::Status::Ok);
    CHECK(info.samples == 64 && info.first == 0 && window[63] == block[63]);
    CHECK(an.readTap(0, static_cast<loophole::TapMode>(7), window, 128, info) ==
          loophole::Status::InvalidArgument);
    CHECK(an.readTap(3, loophole::TapMode::Next, window, 128, info) ==
          loophole::Status::InvalidArgument);

    LoopholeAnalysisRequest reqs[LOOPHOLE_MAX_ANALYSIS_REQUESTS];
    std::size_t count = 99;
    CHECK(an.requests(reqs, LOOPHOLE_MAX_ANALYSIS_REQUESTS, count) == loophole::Status::Ok);
    CHECK(count == 0);  // no client, no subscription
    LoopholeAnalysisRequest forged{sizeof(LoopholeAnalysisRequest), 0, LOOPHOLE_ANALYSIS_SPECTRUM,
                                   0, 16, 30, 1, 16};
    float values[16] = {};
    CHECK(an.submit(forged, 0, 0, 48000, values, 16) == loophole::Status::Stale);
    CHECK(an.submit(forged, 0, 0, 48000, values, 15) == loophole::Status::WrongLength);
    forged.stream = 3;
    CHECK(an.submit(forged, 0, 0, 48000, values, 16) == loophole::Status::InvalidArgument);
    CHECK(an.isConnected());
    CHECK(server.shutdown() == loophole::Status::Ok);
    CHECK(!an.isConnected());
    // Destruction in any order: the server first here, the analysis handle last.
    server = loophole::Server();
    audio = loophole::AudioEndpoint();
    control = loophole::Control();
}

}  // namespace

int main() {
    CHECK(std::strcmp(loophole::toString(loophole::Status::Ok), "ok") == 0);
    CHECK(std::strcmp(loophole::toString(loophole::Status::Poisoned), "unknown status") != 0);

    loophole::Server server;
    loophole::AudioEndpoint audio;
    loophole::Control control;
    CHECK(!server && !audio && !control);

    {
        loophole::Config bad;
        bad.abi_version = 999;
        char err[128] = {};
        CHECK(loophole::create(bad, server, audio, control, err, sizeof err) ==
              loophole::Status::AbiMismatch);
        CHECK(!server && err[0] != 0);
    }

    loophole::Config cfg;
    cfg.engine_name = "capi-cpp-test";
    cfg.meter_channels = 2;
    CHECK(loophole::create(cfg, server, audio, control) == loophole::Status::Ok);
    CHECK(server && audio && control);
    const std::string line = server.announcement();
    CHECK(line.rfind("LOOPHOLE_LISTEN {", 0) == 0);
    {
        char small[4];
        std::size_t len = 0;
        CHECK(server.announcement(small, sizeof small, &len) == loophole::Status::BufferTooSmall);
        CHECK(len == line.size());
    }
    CHECK(server.port() != 0 && server.isRunning() && !server.hasClient());
    CHECK(!control.isOrphaned());
    audio.setSampleRate(48000);

    // Moving transfers ownership; the moved-from owner is empty.
    loophole::AudioEndpoint moved(std::move(audio));
    CHECK(moved && !audio);
    audio = std::move(moved);
    CHECK(audio && !moved);

    mini_client* mc = static_cast<mini_client*>(std::calloc(1, sizeof(mini_client)));
    CHECK(mc_connect(mc, server.port()) == 0);
    for (const char* c : kCommands) CHECK(mc_send(mc, c) == 0);

    Engine engine;
    Handler handler{engine};
    float left[64], right[64], inter[128];
    const float* planar[2] = {left, right};
    long audio_news = 0;
    int lambda_calls = 0;
    const std::uint64_t t0 = loophole::nowNs();
    bool all = false;
    for (int n = 0; !all && loophole::nowNs() - t0 < 10'000'000'000ull; n++) {
        const long before = g_news.load();
        {
            loophole::ScopedCallback<HostClock> cb(audio, 64);
            if (n % 2 == 0) {
                cb.drain(handler);  // a functor by reference
            } else {
                // A capturing lambda (by reference: nothing is copied or allocated).
                cb.drain([&](const LoopholeCommand& cmd) noexcept {
                    lambda_calls++;
                    return handler(cmd);
                });
            }
            for (int i = 0; i < 64; i++) {
                const float x = engine.playing ? engine.gain * std::sin(0.05f * i) : 0.0f;
                left[i] = right[i] = inter[2 * i] = inter[2 * i + 1] = x;
            }
            cb.endpoint().publishMeters(planar, 2, 64);
            cb.endpoint().publishMetersInterleaved(inter, 2, 64);
            cb.endpoint().publishLevels(1, engine.gain, 0.0, 64);
            loophole::Transport t;
            t.playing = engine.playing;
            (void)cb.endpoint().publishTransport(t);
            if (n == 5) cb.endpoint().reportXrun();
        }
        audio_news += g_news.load() - before;

        LoopholeControlRequest req{};
        if (control.recv(req, 0) == loophole::Status::Ok) {
            CHECK(req.op == LOOPHOLE_CONTROL_ADD_NODE && req.node == 4 &&
                  std::strcmp(req.kind, "gain") == 0);
            CHECK(control.reply(req.ticket, loophole::ControlResult::NodeExists) ==
                  loophole::Status::Ok);
            CHECK(control.reply(req.ticket, loophole::ControlResult::Ok) ==
                  loophole::Status::UnknownTicket);
        }
        mc_poll(mc);
        all = mc->meters > 0;
        for (int id = 3; id <= 9; id++) all = all && mc->answers[id].kind != 0;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    CHECK(all);
    CHECK(audio_news == 0);  // the wrapper's audio path allocated nothing
    CHECK(mc->answers[3].kind == 'a' && mc->answers[4].kind == 'a');
    CHECK(mc->answers[5].kind == 'e' && std::strcmp(mc->answers[5].code, "out_of_range") == 0);
    CHECK(mc->answers[6].kind == 'e' && std::strcmp(mc->answers[6].code, "unknown_node") == 0);
    CHECK(mc->answers[7].kind == 'e' && std::strcmp(mc->answers[7].code, "unsupported") == 0);
    CHECK(mc->answers[8].kind == 'e' && std::strcmp(mc->answers[8].code, "node_exists") == 0);
    CHECK(mc->answers[9].kind == 'a');
    CHECK(engine.calls == 6 && engine.gain == 0.25f && !engine.playing);
    CHECK(server.hasClient());
    LoopholeAudioStats st{};
    CHECK(audio.stats(st) == loophole::Status::Ok);
    CHECK(st.invalid_outcomes == 0 && st.sample_clock > 0 && st.net_gone == 0);
    std::printf("lambda drained %d command(s)\n", lambda_calls);

    // One more command, then the throwing callable in a child process.
    // It reaches the audio queue while nobody drains (the network thread runs in the parent
    // only), is drained by the throwing callable in the child, and normally in the parent.
    CHECK(mc_send(mc, R"({"type":"command","name":"transport.play","id":10,"body":{}})") == 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    testThrowingCallableTerminates(audio);
    for (int n = 0; n < 2000 && mc->answers[10].kind == 0; n++) {
        {
            loophole::ScopedCallback<> cb(audio, 64);
            cb.drain(handler);
        }
        mc_poll(mc);
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    CHECK(mc->answers[10].kind == 'a');

    testAnalysis(server);
    CHECK(server.shutdown() == loophole::Status::Ok);
    CHECK(!server.isRunning());
    LoopholeControlRequest req{};
    CHECK(control.recv(req, 10) == loophole::Status::ServerGone);
    mc_close(mc);
    std::free(mc);

    // Destruction in any order: audio first here, then control, then the server.
    audio = loophole::AudioEndpoint();
    control = loophole::Control();
    server = loophole::Server();

    if (failures) {
        std::fprintf(stderr, "test_wrapper: %d check(s) failed\n", failures);
        return 1;
    }
    std::printf("test_wrapper (C++17): all checks passed\n");
    return 0;
}

// signal_cpp: the C++ version of the `signal` example engine, over the loophole C ABI.
//
// A simulated audio device thread (absolute CLOCK_MONOTONIC deadlines, SCHED_FIFO when
// granted) calls SignalEngine::audioDeviceIOCallbackWithContext, JUCE-style; the main thread is
// the control thread: graph edits on a model graph, engine.shutdown, SIGINT/SIGTERM, orphaning;
// a third thread serves the scope and spectrum streams from the taps (analysis.h).
// Prints exactly one line on stdout (the announcement); everything else goes to stderr.
// Options are those of `signal` (see kHelp); aura drives it with `aura --engine PATH`.
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "engine.h"

namespace {

constexpr int kExitOk = 0, kExitFailure = 1, kExitUsage = 2, kExitCannotStart = 3;
constexpr std::uint64_t kMaxCatchUp = 4;
/// welcome.engine is "name/version" (envelope.md); the version is the crate's, like `signal`'s.
constexpr char kEngineName[] = "signal_cpp/0.1.0";

const char kHelp[] =
    "signal_cpp - the example Loophole engine in C++ (JUCE-shaped) over the loophole C ABI.\n"
    "\n"
    "USAGE: signal_cpp [OPTIONS]\n"
    "  --port N              Listen on exactly port N (exit 3 if taken); 0 = OS-chosen,\n"
    "                        the default.\n"
    "  --port-range A-B      The first free port of A..=B.\n"
    "  --host IP             Address to bind (loopback only). Default 127.0.0.1.\n"
    "  --sample-rate HZ      8000..=384000. Default 48000.\n"
    "  --block-size N        Frames per callback, 16..=8192. Default 128.\n"
    "  --channels N          Output (metered) channels, 1..=512. Default 2.\n"
    "  --supervisor-pid PID  Exit when PID is gone and no client is connected.\n"
    "  --connection-file P   Also write the announcement JSON to P.\n"
    "  --no-rt               Do not ask for SCHED_FIFO.\n"
    "  --rt-priority N       SCHED_FIFO priority, 1..=99. Default 70.\n"
    "  --device-speed F      Testing aid: the device clock runs F times real time (0.25..=4).\n"
    "  -h, --help            This help.       -V, --version   The version.\n"
    "ENVIRONMENT: LOOPHOLE_SESSION_TOKEN (the session token clients must present).\n"
    "GRAPH: node 1 osc (param 0 = Hz 1..=20000), node 2 gain (param 0 = 0..=4), node 3 meter.\n"
    "  graph.* edit a model graph on the control thread that starts as this one (the rules of\n"
    "  `signal`): osc (no input, output 0), gain (input 0, output 0), meter (input 0, no\n"
    "  output); node_exists, unknown_kind, unknown_node, out_of_range (a port the kind lacks),\n"
    "  unsupported (a connection that exists, does not exist for disconnect, or would close a\n"
    "  cycle, a self-loop included). Nodes 1-3 and their two connections cannot be removed\n"
    "  (unsupported); added nodes are recorded, not rendered (param.set: unknown_node).\n"
    "TAPS (scope and spectrum, welcome.taps = 3): 0 master L, 1 master R, 2 a 1000 Hz test\n"
    "  tone at amplitude 0.5 (-6.02 dBFS), always on. Each tap keeps 65536 samples.\n"
    "EXIT CODES: 0 clean, 1 failure, 2 bad arguments, 3 cannot start the server.\n";

struct Options {
    std::string host = "127.0.0.1";
    unsigned port = 0, portLast = 0;
    unsigned sampleRate = 48000, blockSize = 128, channels = 2, supervisorPid = 0;
    std::string connectionFile;
    bool realtime = true;
    int rtPriority = 70;
    double speed = 1.0;
};

bool number(const char* s, double lo, double hi, double& out) {
    char* end = nullptr;
    errno = 0;
    out = std::strtod(s, &end);
    return errno == 0 && end != s && *end == 0 && out >= lo && out <= hi;
}

// Returns -1 to run, else an exit code.
int parse(int argc, char** argv, Options& o) {
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i], v;
        const auto eq = a.find('=');
        if (a.rfind("--", 0) == 0 && eq != std::string::npos) {
            v = a.substr(eq + 1);
            a = a.substr(0, eq);
        }
        auto value = [&]() -> bool {
            if (!v.empty()) return true;
            if (i + 1 >= argc) return false;
            v = argv[++i];
            return true;
        };
        double n = 0;
        auto num = [&](double lo, double hi) { return value() && number(v.c_str(), lo, hi, n); };
        bool ok = true;
        if (a == "-h" || a == "--help") {
            std::fputs(kHelp, stdout);
            return kExitOk;
        } else if (a == "-V" || a == "--version") {
            std::printf("%s (C ABI %u)\n", kEngineName, loophole_abi_version());
            return kExitOk;
        } else if (a == "--port") {
            ok = num(0, 65535) && (o.port = unsigned(n), o.portLast = 0, true);
        } else if (a == "--port-range") {
            unsigned x = 0, y = 0;
            ok = value() && std::sscanf(v.c_str(), "%u-%u", &x, &y) == 2 && x >= 1 && y >= x &&
                 y <= 65535;
            o.port = x, o.portLast = y;
        } else if (a == "--host") {
            ok = value() && (o.host = v, true);
        } else if (a == "--sample-rate") {
            ok = num(8000, 384000) && (o.sampleRate = unsigned(n), true);
        } else if (a == "--block-size") {
            ok = num(16, 8192) && (o.blockSize = unsigned(n), true);
        } else if (a == "--channels") {
            ok = num(1, LOOPHOLE_MAX_METER_CHANNELS) && (o.channels = unsigned(n), true);
        } else if (a == "--supervisor-pid") {
            ok = num(1, 4294967295.0) && (o.supervisorPid = unsigned(n), true);
        } else if (a == "--connection-file") {
            ok = value() && (o.connectionFile = v, true);
        } else if (a == "--no-rt") {
            o.realtime = false;
        } else if (a == "--rt-priority") {
            ok = num(1, 99) && (o.rtPriority = int(n), true);
        } else if (a == "--device-speed") {
            ok = num(0.25, 4) && (o.speed = n, true);
        } else {
            std::fprintf(stderr, "signal_cpp: unknown argument `%s`\n", a.c_str());
            return kExitUsage;
        }
        if (!ok) {
            std::fprintf(stderr, "signal_cpp: bad value for %s\n", a.c_str());
            return kExitUsage;
        }
    }
    return -1;
}

std::uint64_t monoNs() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::uint64_t(ts.tv_sec) * 1000000000ull + std::uint64_t(ts.tv_nsec);
}

void sleepUntil(std::uint64_t deadline) noexcept {
    timespec ts{};
    ts.tv_sec = time_t(deadline / 1000000000ull);
    ts.tv_nsec = long(deadline % 1000000000ull);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
    }
}

/// The simulated device: calls the callback every period on absolute deadlines.
class SimulatedDevice final : public juce::AudioIODevice {
public:
    SimulatedDevice(const Options& o, signal_cpp::SignalEngine& engine)
        : opts_(o), engine_(engine), buffers_(o.channels, std::vector<float>(o.blockSize)) {
        for (auto& b : buffers_) outs_.push_back(b.data());
    }
    double getCurrentSampleRate() override { return opts_.sampleRate; }
    int getCurrentBufferSizeSamples() override { return int(opts_.blockSize); }

    void start() {
        thread_ = std::thread([this] { run(); });
    }
    std::uint64_t stop() {
        stop_.store(true);
        if (thread_.joinable()) thread_.join();
        return callbacks_;
    }

private:
    void run() {
        if (!opts_.realtime) {
            std::fprintf(stderr, "signal_cpp: real-time scheduling not requested (--no-rt)\n");
        } else {
            sched_param p{};
            p.sched_priority = opts_.rtPriority;
            const int rc = pthread_setschedparam(pthread_self(), SCHED_FIFO, &p);
            if (rc == 0)
                std::fprintf(stderr, "signal_cpp: audio thread runs SCHED_FIFO at %d\n", p.sched_priority);
            else
                std::fprintf(stderr, "signal_cpp: WARNING: SCHED_FIFO not granted (%s)\n", std::strerror(rc));
        }
        engine_.audioDeviceAboutToStart(this);
        const auto period =
            std::uint64_t(double(opts_.blockSize) * 1e9 / (double(opts_.sampleRate) * opts_.speed));
        std::uint64_t next = monoNs() + period;
        juce::AudioIODeviceCallbackContext ctx;
        std::uint64_t hostTime = 0;
        ctx.hostTimeNs = &hostTime;
        while (!stop_.load(std::memory_order_relaxed)) {
            sleepUntil(next);
            const std::uint64_t now = monoNs();
            if (now > next + kMaxCatchUp * period) {  // too far behind: drop blocks
                const std::uint64_t behind = (now - next) / period;
                engine_.noteDroppedBlocks(behind);
                next += behind * period;
            }
            hostTime = next;
            engine_.audioDeviceIOCallbackWithContext(nullptr, 0, outs_.data(), int(outs_.size()),
                                                     int(opts_.blockSize), ctx);
            ++callbacks_;
            next += period;
            if (monoNs() > next) engine_.noteDroppedBlocks(1);  // finished after it was due
        }
        engine_.audioDeviceStopped();
    }

    const Options& opts_;
    signal_cpp::SignalEngine& engine_;
    std::vector<std::vector<float>> buffers_;
    std::vector<float*> outs_;
    std::thread thread_;
    std::atomic<bool> stop_{false};
    std::uint64_t callbacks_ = 0;
};

/// The control thread's model of the graph: what graph edits are checked against (the same
/// rules as examples/signal.rs's ModelGraph).
///
/// The audio thread renders a fixed graph (1 osc -> 2 gain -> 3 meter) and param.set addresses
/// it alone; this model starts as that graph and takes every edit envelope.md allows, except
/// that what the audio thread renders (nodes 1-3 and their two connections) cannot be removed
/// (`unsupported`), so the model never says a rendered node is gone while param.set still
/// reaches it. Nodes added here are checked and recorded, not rendered.
/// [control-thread] Allocates (std::map/std::set); never called from the audio callback.
class ModelGraph {
public:
    using R = loophole::ControlResult;

    ModelGraph() {
        for (const auto& n : kRendered) nodes_[n.id] = &kKinds[n.kind];
        for (const auto& e : kRenderedEdges) edges_.insert(e);
    }

    R apply(const LoopholeControlRequest& r) {
        switch (r.op) {
        case LOOPHOLE_CONTROL_ADD_NODE: return addNode(r.node, r.kind);
        case LOOPHOLE_CONTROL_REMOVE_NODE: return removeNode(r.node);
        case LOOPHOLE_CONTROL_CONNECT: return connect(Edge{r.from, r.from_port, r.to, r.to_port});
        case LOOPHOLE_CONTROL_DISCONNECT:
            return disconnect(Edge{r.from, r.from_port, r.to, r.to_port});
        default: return R::Unsupported;
        }
    }

private:
    using Edge = std::tuple<std::uint32_t, std::uint16_t, std::uint32_t, std::uint16_t>;
    /// A node kind: its name and how many input and output ports it has.
    struct Kind {
        const char* name;
        std::uint16_t inputs, outputs;
    };
    struct Rendered {
        std::uint32_t id;
        std::size_t kind;  // index into kKinds
    };
    static constexpr Kind kKinds[3] = {{"osc", 0, 1}, {"gain", 1, 1}, {"meter", 1, 0}};
    /// The nodes the audio thread renders (engine.h: kNodeOsc, kNodeGain, kNodeMeter).
    static constexpr Rendered kRendered[3] = {
        {signal_cpp::kNodeOsc, 0}, {signal_cpp::kNodeGain, 1}, {signal_cpp::kNodeMeter, 2}};
    /// The connections the audio thread renders.
    static constexpr Edge kRenderedEdges[2] = {
        Edge{signal_cpp::kNodeOsc, 0, signal_cpp::kNodeGain, 0},
        Edge{signal_cpp::kNodeGain, 0, signal_cpp::kNodeMeter, 0}};

    static bool rendered(std::uint32_t node) {
        for (const auto& n : kRendered)
            if (n.id == node) return true;
        return false;
    }
    static bool rendered(const Edge& e) {
        for (const auto& r : kRenderedEdges)
            if (r == e) return true;
        return false;
    }

    R addNode(std::uint32_t node, const char* kind) {
        if (nodes_.count(node)) return R::NodeExists;
        for (const auto& k : kKinds) {
            if (std::strcmp(k.name, kind) == 0) {
                nodes_[node] = &k;
                return R::Ok;
            }
        }
        return R::UnknownKind;
    }

    R removeNode(std::uint32_t node) {
        if (!nodes_.count(node)) return R::UnknownNode;
        if (rendered(node)) return R::Unsupported;
        nodes_.erase(node);
        for (auto it = edges_.begin(); it != edges_.end();)
            it = (std::get<0>(*it) == node || std::get<2>(*it) == node) ? edges_.erase(it)
                                                                        : std::next(it);
        return R::Ok;
    }

    R connect(const Edge& e) {
        if (R r = checkEnds(e); r != R::Ok) return r;
        // Exists already, or would close a cycle (a self-loop included).
        if (edges_.count(e) || reaches(std::get<2>(e), std::get<0>(e))) return R::Unsupported;
        edges_.insert(e);
        return R::Ok;
    }

    R disconnect(const Edge& e) {
        if (R r = checkEnds(e); r != R::Ok) return r;
        if (!edges_.count(e) || rendered(e)) return R::Unsupported;  // no such one, or rendered
        edges_.erase(e);
        return R::Ok;
    }

    /// Both ends exist (`unknown_node`) and have the ports named (`out_of_range`).
    R checkEnds(const Edge& e) const {
        const auto from = nodes_.find(std::get<0>(e)), to = nodes_.find(std::get<2>(e));
        if (from == nodes_.end() || to == nodes_.end()) return R::UnknownNode;
        if (std::get<1>(e) >= from->second->outputs || std::get<3>(e) >= to->second->inputs)
            return R::OutOfRange;
        return R::Ok;
    }

    /// Whether a path of connections leads from `start` to `goal` (a node reaches itself).
    bool reaches(std::uint32_t start, std::uint32_t goal) const {
        std::set<std::uint32_t> seen;
        std::vector<std::uint32_t> todo{start};
        while (!todo.empty()) {
            const std::uint32_t n = todo.back();
            todo.pop_back();
            if (n == goal) return true;
            if (!seen.insert(n).second) continue;
            for (const auto& e : edges_)
                if (std::get<0>(e) == n) todo.push_back(std::get<2>(e));
        }
        return false;
    }

    std::map<std::uint32_t, const Kind*> nodes_;
    std::set<Edge> edges_;
};

/// SIGINT/SIGTERM, if one is pending (they are blocked in every thread and taken here).
int pendingStopSignal(const sigset_t& set) {
    timespec zero{};
    const int sig = sigtimedwait(&set, nullptr, &zero);
    return sig > 0 ? sig : 0;
}

std::string controlLoop(loophole::Control& control, const sigset_t& stopSignals) {
    ModelGraph model;
    for (;;) {
        if (int sig = pendingStopSignal(stopSignals))
            return sig == SIGINT ? "SIGINT" : "SIGTERM";
        LoopholeControlRequest req{};
        switch (control.recv(req, 50)) {
        case loophole::Status::Ok: break;
        case loophole::Status::Timeout: continue;
        case loophole::Status::ServerGone: return "network thread stopped";
        default: return "control route failed";
        }
        if (req.op == LOOPHOLE_CONTROL_ORPHANED) return "supervisor gone and no client came back";
        if (req.op == LOOPHOLE_CONTROL_SHUTDOWN) {
            (void)control.reply(req.ticket, loophole::ControlResult::Ok);
            return "engine.shutdown";
        }
        if (control.reply(req.ticket, model.apply(req)) == loophole::Status::ServerGone)
            return "network thread stopped";
    }
}

}  // namespace

int main(int argc, char** argv) {
    Options opts;
    if (int rc = parse(argc, argv, opts); rc >= 0) return rc;

    // Before any thread exists: SIGINT/SIGTERM blocked everywhere, taken by the control loop.
    sigset_t stopSignals;
    sigemptyset(&stopSignals);
    sigaddset(&stopSignals, SIGINT);
    sigaddset(&stopSignals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stopSignals, nullptr);

    loophole::Config cfg;
    cfg.host = opts.host.c_str();
    cfg.port = std::uint16_t(opts.port);
    cfg.port_range_last = std::uint16_t(opts.portLast);
    cfg.token_from_env = 1;
    cfg.engine_name = kEngineName;
    cfg.connection_file = opts.connectionFile.empty() ? nullptr : opts.connectionFile.c_str();
    cfg.sample_rate = opts.sampleRate;
    cfg.block_size = opts.blockSize;
    cfg.meter_channels = opts.channels;
    cfg.supervisor_pid = opts.supervisorPid;
    cfg.analysis_taps = signal_cpp::kTaps;
    cfg.tap_capacity = signal_cpp::kTapCapacity;

    loophole::Server server;
    loophole::AudioEndpoint audio;
    loophole::Control control;
    char err[256] = {};
    if (loophole::create(cfg, server, audio, control, err, sizeof err) != loophole::Status::Ok) {
        std::fprintf(stderr, "signal_cpp: cannot start: %s\n", err);
        return kExitCannotStart;
    }
    loophole::Analysis analysis;
    if (loophole::takeAnalysis(server, analysis) != loophole::Status::Ok) {
        std::fprintf(stderr, "signal_cpp: cannot take the analysis handle\n");
        return kExitCannotStart;
    }
    std::fprintf(stderr, "signal_cpp: listening on port %u, %u Hz, %u frames/block, %u channels\n",
                 server.port(), opts.sampleRate, opts.blockSize, opts.channels);

    signal_cpp::SignalEngine engine(audio);
    SimulatedDevice device(opts, engine);
    signal_cpp::Analyzer analyzer(analysis, opts.sampleRate, signal_cpp::kTaps,
                                  signal_cpp::kTapCapacity);
    std::atomic<bool> analysisStop{false};
    std::thread analysisThread;
    try {
        device.start();
        analysisThread = std::thread([&] { analyzer.run(analysisStop); });
    } catch (const std::exception& e) {
        std::fprintf(stderr, "signal_cpp: cannot start a thread: %s\n", e.what());
        (void)device.stop();
        return kExitFailure;
    }
    std::printf("%s\n", server.announcement().c_str());
    std::fflush(stdout);

    const std::string reason = controlLoop(control, stopSignals);
    std::fprintf(stderr, "signal_cpp: shutting down (%s)\n", reason.c_str());
    // Network first, while the audio thread still answers: owed answers go out before goodbye.
    (void)server.shutdown();
    analysisStop.store(true);
    analysisThread.join();
    const std::uint64_t callbacks = device.stop();
    std::fprintf(stderr, "signal_cpp: stopped after %llu callbacks, %llu analysis values\n",
                 static_cast<unsigned long long>(callbacks),
                 static_cast<unsigned long long>(analyzer.submitted()));
    return kExitOk;
}

// The probe: the C++ engine's audio callback (capi/examples/signal_cpp/engine.h, unchanged)
// behind a tiny C interface the Rust test harness drives. operator new/delete are replaced and
// counted (on top of the malloc interposer) so C++ heap use is seen even if it bypassed malloc.
#include <unistd.h>
#include <sys/syscall.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include "engine.h"

namespace {
thread_local std::uint64_t g_news = 0;  // const-initialised: no allocation, no syscall

struct Probe {
    explicit Probe(LoopholeAudio* a, int channels, int frames)
        : audio(a), engine(audio), buffers(std::size_t(channels), std::vector<float>(std::size_t(frames))),
          frames(frames) {
        for (auto& b : buffers) outs.push_back(b.data());
    }
    ~Probe() { (void)audio.release(); }  // the harness owns the handle
    loophole::AudioEndpoint audio;
    signal_cpp::SignalEngine engine;
    std::vector<std::vector<float>> buffers;
    std::vector<float*> outs;
    int frames;
};

struct Device final : juce::AudioIODevice {
    double getCurrentSampleRate() override { return 48000.0; }
    int getCurrentBufferSizeSamples() override { return 64; }
};
}  // namespace

void* operator new(std::size_t n) {
    ++g_news;
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

extern "C" {

void* probe_new(LoopholeAudio* audio, int channels, int frames) {
    auto* p = new Probe(audio, channels, frames);
    Device d;
    p->engine.audioDeviceAboutToStart(&d);
    return p;
}

/// One device callback. mode 0: the engine as shipped; 1: negative control, the callback also
/// allocates (operator new); 2: negative control, it also makes a system call (getppid).
void probe_callback(void* probe, int mode) {
    auto* p = static_cast<Probe*>(probe);
    juce::AudioIODeviceCallbackContext ctx;
    p->engine.audioDeviceIOCallbackWithContext(nullptr, 0, p->outs.data(), int(p->outs.size()),
                                               p->frames, ctx);
    if (mode == 1) {
        int* volatile leak = new int(1);
        delete leak;
    } else if (mode == 2) {
        (void)syscall(SYS_getppid);
    }
}

std::uint64_t probe_thread_news(void) { return g_news; }

void probe_free(void* probe) { delete static_cast<Probe*>(probe); }
}

// ---------------------------------------------------------------------------------------------
// The benchmark's C++ side: one callback's work through the wrapper and the C ABI (begin, drain
// with a lambda that applies param.set, 64-channel planar meters, end).
namespace {
struct BenchState {
    float gain = 0.5f;
    std::uint32_t applied = 0;
};
BenchState g_bench;
}  // namespace

extern "C" std::uint32_t bench_cpp_callback(LoopholeAudio* a, const float* const* channels,
                                            std::uint32_t n_channels, std::uint32_t frames,
                                            std::uint64_t now_ns) {
    loophole::AudioEndpoint ep(a);
    ep.begin(now_ns, frames);
    const std::uint32_t n = ep.drain([](const LoopholeCommand& c) noexcept -> LoopholeOutcome {
        if (c.op != LOOPHOLE_OP_PARAM_SET || c.node != 2)
            return loophole::rejected(loophole::Reject::UnknownNode);
        if (!(c.value >= 0.0f && c.value <= 4.0f))
            return loophole::rejected(loophole::Reject::OutOfRange);
        g_bench.gain = c.value;
        g_bench.applied++;
        return loophole::applied();
    });
    ep.publishMeters(channels, n_channels, frames);
    ep.end(now_ns + 1000);
    (void)ep.release();  // the harness owns the handle
    return n;
}

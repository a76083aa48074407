// Driver for the README's "Embedding in a C++ / JUCE engine" sample: scripts/test.d/30-capi.sh
// extracts the sample's code block from capi/README.md into readme_sample.inc, and this file
// runs it for 100 callbacks, so the README cannot rot.
#include "readme_sample.inc"

#include <cstdio>
#include <vector>

namespace {
struct Device final : juce::AudioIODevice {
    double getCurrentSampleRate() override { return 48000.0; }
    int getCurrentBufferSizeSamples() override { return 64; }
};
}  // namespace

int main() {
    loophole::Config cfg;
    loophole::Server server;
    loophole::AudioEndpoint audio;
    loophole::Control control;
    char err[256] = {};
    if (loophole::create(cfg, server, audio, control, err, sizeof err) != loophole::Status::Ok) {
        std::fprintf(stderr, "create: %s\n", err);
        return 1;
    }
    EngineCallback engine(audio);
    Device device;
    engine.audioDeviceAboutToStart(&device);
    std::vector<float> l(64), r(64);
    float* out[2] = {l.data(), r.data()};
    juce::AudioIODeviceCallbackContext ctx;
    for (int i = 0; i < 100; ++i) engine.audioDeviceIOCallbackWithContext(nullptr, 0, out, 2, 64, ctx);
    engine.audioDeviceStopped();
    LoopholeAudioStats st{};
    if (audio.stats(st) != loophole::Status::Ok || st.sample_clock != 100 * 64) {
        std::fprintf(stderr, "readme sample: wrong sample clock %llu\n",
                     static_cast<unsigned long long>(st.sample_clock));
        return 1;
    }
    std::printf("readme sample: 100 callbacks through the ABI, ok\n");
    return 0;
}

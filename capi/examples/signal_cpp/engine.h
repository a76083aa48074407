// The C++ version of examples/signal's engine: the same fixed graph (oscillator -> gain ->
// meter), transport and parameter ramps, with the same error answers, written as a JUCE
// AudioIODeviceCallback over the loophole C++ wrapper.
//
// Real-time rules: after construction nothing here allocates, locks or makes a system call.
// The callback reads the library clock (vDSO) and the device's host time only. Every callback
// publishes the output and the test tone into the analysis taps (analysis.h); taps the endpoint
// was not configured with are refused (InvalidArgument), and that is ignored.
#ifndef LOOPHOLE_SIGNAL_CPP_ENGINE_H
#define LOOPHOLE_SIGNAL_CPP_ENGINE_H

#include <cmath>
#include <cstdint>

#include "analysis.h"
#include "juce_audio_devices_stub.h"
#include "loophole_ipc.hpp"

namespace signal_cpp {

constexpr std::uint32_t kNodeOsc = 1;    // param 0 = frequency, Hz, 1..=20000
constexpr std::uint32_t kNodeGain = 2;   // param 0 = linear gain, 0..=4
constexpr std::uint32_t kNodeMeter = 3;  // no parameters
constexpr float kDefaultFreq = 440.0f;
constexpr float kDefaultGain = 0.5f;

/// A linear parameter ramp, one step per sample.
class Ramp {
public:
    explicit constexpr Ramp(float v) noexcept : value_(v), target_(v) {}
    void set(float target, std::uint32_t samples) noexcept {
        target_ = target;
        left_ = samples;
        if (samples == 0) {
            value_ = target;
            step_ = 0.0f;
        } else {
            step_ = (target - value_) / static_cast<float>(samples);
        }
    }
    float tick() noexcept {
        if (left_ > 0) {
            --left_;
            value_ = left_ == 0 ? target_ : value_ + step_;
        }
        return value_;
    }

private:
    float value_, target_, step_ = 0.0f;
    std::uint32_t left_ = 0;
};

/// The engine: what a JUCE developer registers with AudioDeviceManager::addAudioCallback.
class SignalEngine final : public juce::AudioIODeviceCallback {
public:
    explicit SignalEngine(loophole::AudioEndpoint& audio) noexcept : audio_(audio) {}

    void audioDeviceAboutToStart(juce::AudioIODevice* device) override {
        sampleRate_ = static_cast<float>(device->getCurrentSampleRate());
        audio_.setSampleRate(static_cast<std::uint32_t>(sampleRate_));
        tone_.setSampleRate(sampleRate_);
    }
    void audioDeviceStopped() override {}

    /// Blocks the device dropped before this callback (set by the device thread, which is the
    /// thread that runs the callback).
    void noteDroppedBlocks(std::uint64_t n) noexcept { dropped_ += n; }

    void audioDeviceIOCallbackWithContext(const float* const*, int, float* const* out,
                                          int numOut, int numSamples,
                                          const juce::AudioIODeviceCallbackContext&) override {
        const auto frames = static_cast<std::uint32_t>(numSamples);
        loophole::ScopedCallback<> cb(audio_, frames);  // begin now, end at scope exit
        for (; dropped_ > 0; --dropped_) audio_.reportXrun();
        cb.drain([this](const LoopholeCommand& cmd) noexcept { return apply(cmd); });
        render(out, numOut, numSamples);
        audio_.publishMeters(out, static_cast<std::uint32_t>(numOut), frames);
        publishTaps(out, numOut, frames);
        (void)audio_.publishTransport(transport_);
    }

    /// Applies one command from the network thread. Wait-free.
    LoopholeOutcome apply(const LoopholeCommand& c) noexcept {
        using loophole::Reject;
        switch (c.op) {
        case LOOPHOLE_OP_PLAY: transport_.playing = 1; break;
        case LOOPHOLE_OP_STOP: transport_.playing = 0; break;
        case LOOPHOLE_OP_SEEK: transport_.position = c.position; break;
        case LOOPHOLE_OP_TEMPO:
            if (!(std::isfinite(c.bpm) && c.bpm >= 20.0f && c.bpm <= 999.0f))
                return loophole::rejected(Reject::OutOfRange);
            transport_.bpm = c.bpm;
            break;
        case LOOPHOLE_OP_LOOP:
            if (c.loop_enabled && c.loop_end <= c.loop_start)
                return loophole::rejected(Reject::OutOfRange);
            transport_.loop_start = c.loop_start;
            transport_.loop_end = c.loop_end;
            transport_.loop_enabled = c.loop_enabled;
            break;
        case LOOPHOLE_OP_PARAM_SET: return setParam(c.node, c.param, c.value, c.ramp_ms);
        default: return loophole::rejected(Reject::Unsupported);
        }
        return loophole::applied();
    }

    const LoopholeTransport& transport() const noexcept { return transport_; }

private:
    LoopholeOutcome setParam(std::uint32_t node, std::uint32_t param, float value,
                             float ramp_ms) noexcept {
        using loophole::Reject;
        Ramp* ramp = nullptr;
        float lo = 0, hi = 0;
        if (node == kNodeOsc && param == 0) {
            ramp = &freq_, lo = 1.0f, hi = 20000.0f;
        } else if (node == kNodeGain && param == 0) {
            ramp = &gain_, lo = 0.0f, hi = 4.0f;
        } else if (node == kNodeOsc || node == kNodeGain || node == kNodeMeter) {
            return loophole::rejected(Reject::UnknownParam);
        } else {
            return loophole::rejected(Reject::UnknownNode);
        }
        if (!(value >= lo && value <= hi && std::isfinite(ramp_ms) && ramp_ms >= 0.0f))
            return loophole::rejected(Reject::OutOfRange);
        const double samples = std::round(double(ramp_ms) * sampleRate_ / 1000.0);
        ramp->set(value, samples >= 4294967295.0 ? 4294967295u : std::uint32_t(samples));
        return loophole::applied();
    }

    void render(float* const* out, int numOut, int numSamples) noexcept {
        const bool playing = transport_.playing != 0;
        const float inv = 1.0f / sampleRate_;
        for (int i = 0; i < numSamples; ++i) {
            const float f = freq_.tick();
            const float g = gain_.tick();
            float x = 0.0f;
            if (playing) {
                x = std::sin(phase_ * 6.28318530718f) * g;
                phase_ += f * inv;
                phase_ -= std::floor(phase_);
            }
            for (int ch = 0; ch < numOut; ++ch) out[ch][i] = x;
        }
        if (playing) advance(static_cast<std::uint64_t>(numSamples));
    }

    /// Taps 0 and 1: master L and R (the graph is mono: R is L when there is one channel);
    /// tap 2: the test tone. Every tap gets every block, so a tap's sample index is the
    /// engine's sample clock.
    void publishTaps(float* const* out, int numOut, std::uint32_t frames) noexcept {
        if (numOut > 0) {
            (void)audio_.publishTap(0, out[0], frames);
            (void)audio_.publishTap(1, out[numOut > 1 ? 1 : 0], frames);
        }
        (void)audio_.publishTap(kTapTestTone, tone_.render(frames),
                                std::min(frames, TestTone::kMaxBlock));
    }

    void advance(std::uint64_t frames) noexcept {
        auto& t = transport_;
        t.position += frames;
        if (t.loop_enabled && t.loop_end > t.loop_start && t.position >= t.loop_end)
            t.position = t.loop_start + (t.position - t.loop_end) % (t.loop_end - t.loop_start);
    }

    loophole::AudioEndpoint& audio_;
    float sampleRate_ = 48000.0f;
    Ramp freq_{kDefaultFreq};
    Ramp gain_{kDefaultGain};
    float phase_ = 0.0f;
    TestTone tone_;
    loophole::Transport transport_;
    std::uint64_t dropped_ = 0;
};

}  // namespace signal_cpp

#endif  // LOOPHOLE_SIGNAL_CPP_ENGINE_H

// A stand-in for the few declarations of JUCE's juce_audio_devices module that the example
// engine uses (JUCE itself is not available in this repository's CI). The shapes follow JUCE 7:
// juce::AudioIODeviceCallback with audioDeviceIOCallbackWithContext, and
// juce::AudioIODeviceCallbackContext carrying an optional host time in nanoseconds. In a real
// JUCE project, delete this file and include <juce_audio_devices/juce_audio_devices.h>.
#ifndef LOOPHOLE_JUCE_AUDIO_DEVICES_STUB_H
#define LOOPHOLE_JUCE_AUDIO_DEVICES_STUB_H

#include <cstdint>

namespace juce {

/// Extra information about one callback (JUCE 7: `hostTimeNs` may be null).
struct AudioIODeviceCallbackContext {
    const std::uint64_t* hostTimeNs = nullptr;
};

/// The device, as the callback sees it in audioDeviceAboutToStart.
class AudioIODevice {
public:
    virtual ~AudioIODevice() = default;
    virtual double getCurrentSampleRate() = 0;
    virtual int getCurrentBufferSizeSamples() = 0;
};

/// The interface a JUCE audio device calls on its real-time thread.
class AudioIODeviceCallback {
public:
    virtual ~AudioIODeviceCallback() = default;
    virtual void audioDeviceIOCallbackWithContext(const float* const* inputChannelData,
                                                  int numInputChannels,
                                                  float* const* outputChannelData,
                                                  int numOutputChannels, int numSamples,
                                                  const AudioIODeviceCallbackContext& context) = 0;
    virtual void audioDeviceAboutToStart(AudioIODevice* device) = 0;
    virtual void audioDeviceStopped() = 0;
};

}  // namespace juce

#endif  // LOOPHOLE_JUCE_AUDIO_DEVICES_STUB_H

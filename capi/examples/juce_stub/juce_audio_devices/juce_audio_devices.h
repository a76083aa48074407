// Stand-in for JUCE's module header (see ../juce_audio_devices_stub.h): lets the README sample
// include <juce_audio_devices/juce_audio_devices.h> exactly as a JUCE project does.
#include "../juce_audio_devices_stub.h"

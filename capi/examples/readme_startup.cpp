// Driver for the README's start-up sample: scripts/test.d/30-capi.sh extracts the two code
// blocks of capi/README.md's "Embedding in a C++ / JUCE engine" (the callback, then start-up
// and the control loop with its `main`) and builds them as one engine, which it runs under
// `aura`: the README's engine must announce itself, answer and exit 0 on `engine.shutdown`.
#include <cstdio>

#include "readme_sample.inc"
#include "readme_startup.inc"

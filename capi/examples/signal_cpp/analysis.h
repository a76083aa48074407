// signal_cpp's analysis worker: the `scope` and `spectrum` streams computed from the taps on a
// thread of their own, the C++ counterpart of examples/signal/analysis.rs (same taps, same
// numbers, so `aura watch` shows the same picture from either engine).
//
// Each tap is drained into a history of its own (TapMode::Next), so `missed` counts exactly the
// samples the tap overwrote before they were read; at each request's rate the worker computes:
// - scope: the most recent points × spp samples, min and max per point, with
//   spp = ceil(ceil(sample_rate / rate_hz) / points) (the window covers the time since the
//   previous frame), at most tap_capacity / points;
// - spectrum: a periodic Hann window over the most recent 2 × bins samples, a radix-2 FFT,
//   dBFS per bin k = 0 .. bins - 1 normalised so that a full-scale sine at a bin centre reads
//   0 dB (|X_k| × 2 / Σw; DC × 1), floored at -160 dB; non-finite samples count as 0.
//
// Threads: [analysis-thread] only (never the audio thread). Allocation: every buffer and the
// FFT's twiddle table in the constructor; nothing per frame. May block: run() sleeps between
// frames, holding nothing another thread needs. Reading a tap and submitting a value make no
// system call (loophole_ipc.h).
#ifndef LOOPHOLE_SIGNAL_CPP_ANALYSIS_H
#define LOOPHOLE_SIGNAL_CPP_ANALYSIS_H

#include <time.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <vector>

#include "loophole_ipc.hpp"

namespace signal_cpp {

/// Taps: 0 master L, 1 master R, 2 the test tone.
constexpr std::uint32_t kTaps = 3;
constexpr std::uint32_t kTapTestTone = 2;
/// Samples each tap's ring keeps (1.4 s at 48 kHz): the longest scope window.
constexpr std::uint32_t kTapCapacity = 65536;
/// The test tone: a 1000 Hz sine at amplitude 0.5 (-6.02 dBFS), always on.
constexpr double kTestToneHz = 1000.0;
constexpr float kTestToneAmplitude = 0.5f;
/// Lowest level a spectrum bin reports, dBFS (envelope.md: never -inf).
constexpr float kFloorDb = -160.0f;
/// Longest the worker sleeps with nothing due, so a new subscription starts within it.
constexpr std::uint64_t kIdlePollNs = 10'000'000;
/// Largest FFT: 2 × the most spectrum bins.
constexpr std::size_t kMaxFft = 2 * 4096;

/// The fixed sine of tap 2. The phase is kept in double cycles so it stays exact for hours.
/// render() is wait-free and allocates nothing (the block is a member).
class TestTone {
public:
    void setSampleRate(double rate) noexcept { step_ = kTestToneHz / std::max(rate, 1.0); }
    /// Renders min(frames, kMaxBlock) samples; returns them.
    const float* render(std::uint32_t frames) noexcept {
        const std::uint32_t n = std::min(frames, kMaxBlock);
        for (std::uint32_t i = 0; i < n; ++i) {
            block_[i] = kTestToneAmplitude * float(std::sin(phase_ * 6.283185307179586));
            phase_ += step_;
            phase_ -= std::floor(phase_);
        }
        return block_.data();
    }
    static constexpr std::uint32_t kMaxBlock = 8192;

private:
    double step_ = kTestToneHz / 48000.0;
    double phase_ = 0.0;
    std::array<float, kMaxBlock> block_{};
};

/// Min and max of each of `points` consecutive runs of `spp` samples of `w` into
/// out[0..points] (minima) and out[points..2 points] (maxima). A run of NaNs reports 0.
inline void scope(const float* w, std::size_t spp, std::size_t points, float* out) noexcept {
    for (std::size_t p = 0; p < points; ++p) {
        float lo = INFINITY, hi = -INFINITY;
        for (std::size_t i = p * spp; i < (p + 1) * spp; ++i) {
            lo = std::fmin(lo, w[i]);  // fmin/fmax skip NaN
            hi = std::fmax(hi, w[i]);
        }
        if (lo > hi) lo = hi = 0.0f;
        out[p] = std::clamp(lo, -FLT_MAX, FLT_MAX);
        out[points + p] = std::clamp(hi, -FLT_MAX, FLT_MAX);
    }
}

/// A radix-2 FFT of up to kMaxFft points with Hann windowing and dBFS per bin.
class Spectrum {
public:
    /// Allocates the buffers and the twiddle table (cos/sin of 2πk / kMaxFft).
    Spectrum() : re_(kMaxFft), im_(kMaxFft), cos_(kMaxFft / 2), sin_(kMaxFft / 2) {
        for (std::size_t k = 0; k < kMaxFft / 2; ++k) {
            const double a = 6.283185307179586 * double(k) / double(kMaxFft);
            cos_[k] = std::cos(a);
            sin_[k] = std::sin(a);
        }
    }

    /// dBFS of the bins = n / 2 bins of `samples[0..n]` into db[0..bins]. `n` is a power of two,
    /// 32 ..= kMaxFft. Allocates nothing.
    void compute(const float* samples, std::size_t n, float* db) noexcept {
        for (std::size_t i = 0; i < n; ++i) {
            const double w = 0.5 - 0.5 * cosTurn(i, n);  // periodic Hann: Σw = n / 2
            re_[i] = std::isfinite(samples[i]) ? double(samples[i]) * w : 0.0;
            im_[i] = 0.0;
        }
        fft(n);
        const double gain = 2.0 / (double(n) / 2.0);
        for (std::size_t k = 0; k < n / 2; ++k) {
            const double amplitude = std::hypot(re_[k], im_[k]) * (k == 0 ? gain / 2 : gain);
            const double level = 20.0 * std::log10(amplitude);
            db[k] = std::isnan(level) ? kFloorDb : float(std::clamp(level, double(kFloorDb), 1000.0));
        }
    }

private:
    /// cos(2π i / n) from the table (n divides kMaxFft).
    double cosTurn(std::size_t i, std::size_t n) const noexcept {
        const std::size_t k = (i % n) * (kMaxFft / n);
        return k < kMaxFft / 2 ? cos_[k] : -cos_[k - kMaxFft / 2];
    }

    /// In place on re_/im_[0..n]: X_k = Σ x_j e^{-2πi jk/n}.
    void fft(std::size_t n) noexcept {
        for (std::size_t i = 1, j = 0; i < n; ++i) {
            std::size_t bit = n >> 1;
            for (; j & bit; bit >>= 1) j ^= bit;
            j ^= bit;
            if (i < j) {
                std::swap(re_[i], re_[j]);
                std::swap(im_[i], im_[j]);
            }
        }
        for (std::size_t len = 2; len <= n; len <<= 1) {
            const std::size_t half = len / 2, stride = kMaxFft / len;
            for (std::size_t start = 0; start < n; start += len) {
                for (std::size_t k = 0; k < half; ++k) {
                    const double wr = cos_[k * stride], wi = -sin_[k * stride];
                    const std::size_t a = start + k, b = a + half;
                    const double vr = re_[b] * wr - im_[b] * wi;
                    const double vi = re_[b] * wi + im_[b] * wr;
                    re_[b] = re_[a] - vr;
                    im_[b] = im_[a] - vi;
                    re_[a] += vr;
                    im_[a] += vi;
                }
            }
        }
    }

    std::vector<double> re_, im_, cos_, sin_;
};

/// The recent samples of one tap, drained from its ring with TapMode::Next, so that `overrun`
/// counts exactly the samples the tap overwrote before this thread read them (the `missed` of
/// envelope.md).
class History {
public:
    /// A ring of `capacity` samples (a power of two: the tap's own capacity).
    explicit History(std::size_t capacity) : buf_(capacity) {}

    /// Drains what the tap published since the last call, through `chunk`. Bounded: one
    /// ring's worth plus one chunk.
    void fill(loophole::Analysis& a, std::uint32_t tap, std::vector<float>& chunk) noexcept {
        const std::size_t mask = buf_.size() - 1;
        for (std::size_t left = buf_.size() + chunk.size(); left > 0;) {
            LoopholeTapRead got{};
            if (a.readTap(tap, loophole::TapMode::Next, chunk.data(), chunk.size(), got) !=
                loophole::Status::Ok)
                return;
            overrun_ += got.missed;
            for (std::uint64_t i = 0; i < got.samples; ++i)
                buf_[std::size_t(got.first + i) & mask] = chunk[std::size_t(i)];
            end_ = got.first + got.samples;
            left -= std::min<std::size_t>(left, std::max<std::size_t>(std::size_t(got.samples), 1));
            if (got.samples < chunk.size()) return;
        }
    }

    /// Copies the newest `n` samples into out[0..n]; false if fewer were published yet.
    bool latest(float* out, std::size_t n) const noexcept {
        if (end_ < n || n > buf_.size()) return false;
        const std::size_t mask = buf_.size() - 1;
        const std::uint64_t first = end_ - n;
        for (std::size_t i = 0; i < n; ++i) out[i] = buf_[std::size_t(first + i) & mask];
        return true;
    }

    /// Tap index after the newest sample.
    std::uint64_t end() const noexcept { return end_; }
    /// Samples the tap overwrote before they were read, since the start.
    std::uint64_t overrun() const noexcept { return overrun_; }

private:
    std::vector<float> buf_;
    std::uint64_t end_ = 0, overrun_ = 0;
};

/// The worker: serves every active request at its rate from the taps' histories.
class Analyzer {
public:
    /// Allocates one history per tap (`tapCapacity` samples, a power of two), the window, the
    /// values and the FFT: the only allocations.
    Analyzer(loophole::Analysis& analysis, std::uint32_t sampleRate, std::uint32_t taps,
             std::uint32_t tapCapacity)
        : analysis_(analysis),
          sampleRate_(std::max<std::uint32_t>(sampleRate, 1)),
          histories_(taps, History(tapCapacity)),
          chunk_(std::min<std::uint32_t>(4096, tapCapacity)),
          window_(tapCapacity),
          values_(LOOPHOLE_MAX_ANALYSIS_VALUES) {}

    /// Serves what is due at `now` (CLOCK_MONOTONIC ns); returns when to come back.
    std::uint64_t step(std::uint64_t now) noexcept {
        std::uint64_t wake = now + kIdlePollNs;
        std::array<LoopholeAnalysisRequest, LOOPHOLE_MAX_ANALYSIS_REQUESTS> reqs{};
        std::size_t count = 0;
        if (analysis_.requests(reqs.data(), reqs.size(), count) != loophole::Status::Ok) count = 0;
        std::array<bool, LOOPHOLE_MAX_ANALYSIS_REQUESTS> active{};
        for (std::size_t i = 0; i < count; ++i) {
            const LoopholeAnalysisRequest& r = reqs[i];
            if (r.slot >= slots_.size() || r.tap >= histories_.size()) continue;
            active[r.slot] = true;
            Slot& s = slots_[r.slot];
            if (!s.active || s.generation != r.generation) {
                // A new subscription's `missed` starts from a drained tap: what the tap
                // overwrote while nobody watched it is not a loss of this subscription.
                histories_[r.tap].fill(analysis_, r.tap, chunk_);
                s = Slot{true, r.generation, now, histories_[r.tap].overrun()};
            }
            if (s.nextDue <= now) {
                const std::uint64_t interval = 1'000'000'000ull / std::max<std::uint32_t>(r.rate_hz, 1);
                s.nextDue = serve(r, s) ? std::max(s.nextDue + interval, now) : now + kIdlePollNs;
            }
            wake = std::min(wake, s.nextDue);
        }
        for (std::size_t i = 0; i < slots_.size(); ++i)
            if (!active[i]) slots_[i] = Slot{};
        return wake;
    }

    /// Runs until the server is gone or `stop` is set. Sleeps between frames.
    void run(const std::atomic<bool>& stop) noexcept {
        while (analysis_.isConnected() && !stop.load(std::memory_order_relaxed)) {
            const std::uint64_t wake = step(nowNs());
            timespec ts{time_t(wake / 1'000'000'000ull), long(wake % 1'000'000'000ull)};
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
            }
        }
    }

    /// Values accepted by the network side, over the worker's life.
    std::uint64_t submitted() const noexcept { return submitted_; }

    static std::uint64_t nowNs() noexcept {
        timespec ts{};
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return std::uint64_t(ts.tv_sec) * 1'000'000'000ull + std::uint64_t(ts.tv_nsec);
    }

private:
    struct Slot {
        bool active = false;
        std::uint32_t generation = 0;
        std::uint64_t nextDue = 0;
        /// The tap's overrun count at this slot's previous value.
        std::uint64_t overrunSeen = 0;
    };

    /// Computes and submits one value; false if the tap has not published enough yet.
    bool serve(const LoopholeAnalysisRequest& r, Slot& slot) noexcept {
        const std::size_t n = r.size;
        std::size_t len = 0, spp = 0;
        std::uint32_t param = 0;
        if (n == 0 || r.values > values_.size()) return false;
        if (r.stream == LOOPHOLE_ANALYSIS_SCOPE) {
            const std::size_t rate = std::max<std::uint32_t>(r.rate_hz, 1);
            const std::size_t perFrame = (sampleRate_ + rate - 1) / rate;
            spp = std::clamp<std::size_t>((perFrame + n - 1) / n, 1,
                                          std::max<std::size_t>(window_.size() / n, 1));
            len = spp * n;
            param = std::uint32_t(spp);
        } else if (r.stream == LOOPHOLE_ANALYSIS_SPECTRUM) {
            len = 2 * n;
            if (len > kMaxFft || (len & (len - 1)) != 0) return false;
            param = sampleRate_;
        } else {
            return false;
        }
        History& h = histories_[r.tap];
        h.fill(analysis_, r.tap, chunk_);
        if (len > window_.size() || !h.latest(window_.data(), len)) return false;
        if (r.stream == LOOPHOLE_ANALYSIS_SCOPE)
            scope(window_.data(), spp, n, values_.data());
        else
            spectrum_.compute(window_.data(), len, values_.data());
        const std::uint64_t missed = h.overrun() - slot.overrunSeen;
        slot.overrunSeen = h.overrun();
        if (analysis_.submit(r, h.end() - 1, missed, param, values_.data(), r.values) ==
            loophole::Status::Ok)
            ++submitted_;
        return true;
    }

    loophole::Analysis& analysis_;
    std::uint32_t sampleRate_;
    std::vector<History> histories_;
    std::vector<float> chunk_, window_, values_;
    Spectrum spectrum_;
    std::array<Slot, LOOPHOLE_MAX_ANALYSIS_REQUESTS> slots_{};
    std::uint64_t submitted_ = 0;
};

}  // namespace signal_cpp

#endif  // LOOPHOLE_SIGNAL_CPP_ANALYSIS_H

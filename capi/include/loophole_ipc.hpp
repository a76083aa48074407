// loophole_ipc.hpp: header-only C++17 wrapper over the C ABI in loophole_ipc.h.
//
// - Move-only RAII owners, one per role: loophole::Server, loophole::AudioEndpoint,
//   loophole::Control, all made by loophole::create(); with analysis_taps > 0 a fourth,
//   loophole::Analysis, taken once with loophole::takeAnalysis(). Destroy them in any order.
// - loophole::ScopedCallback calls begin() in its constructor and end() in its destructor,
//   like juce::AbstractFifo::ScopedRead: one object per audio callback.
// - drain() takes any callable `LoopholeOutcome(const LoopholeCommand&)` through a noexcept
//   trampoline: an exception thrown by it calls std::terminate, it never unwinds into the
//   library.
// - Nothing on the audio path allocates: the callable is passed by address, never copied into
//   a std::function.
// Thread rules are those of loophole_ipc.h: [audio-thread] for AudioEndpoint and
// ScopedCallback, [control-thread] for Server, Control and create(), [analysis-thread] for
// Analysis (the engine's scope/spectrum worker; no system call, but submit() copies up to
// 4096 floats, so never the audio thread).
#ifndef LOOPHOLE_IPC_HPP
#define LOOPHOLE_IPC_HPP

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "loophole_ipc.h"

namespace loophole {

/// Status of a call: Ok (0) or a negative error.
enum class Status : std::int32_t {
    Ok = LOOPHOLE_OK,
    Null = LOOPHOLE_ERR_NULL,
    AbiMismatch = LOOPHOLE_ERR_ABI_MISMATCH,
    InvalidArgument = LOOPHOLE_ERR_INVALID_ARGUMENT,
    CannotStart = LOOPHOLE_ERR_CANNOT_START,
    BufferTooSmall = LOOPHOLE_ERR_BUFFER_TOO_SMALL,
    Timeout = LOOPHOLE_ERR_TIMEOUT,
    ServerGone = LOOPHOLE_ERR_SERVER_GONE,
    UnknownTicket = LOOPHOLE_ERR_UNKNOWN_TICKET,
    Panic = LOOPHOLE_ERR_PANIC,
    Poisoned = LOOPHOLE_ERR_POISONED,
    Stale = LOOPHOLE_ERR_STALE,
    WrongLength = LOOPHOLE_ERR_WRONG_LENGTH,
    NotConfigured = LOOPHOLE_ERR_NOT_CONFIGURED,
};

/// An analysis stream (LoopholeAnalysisRequest::stream).
enum class Stream : std::uint32_t {
    Scope = LOOPHOLE_ANALYSIS_SCOPE,
    Spectrum = LOOPHOLE_ANALYSIS_SPECTRUM,
};

/// How Analysis::readTap picks samples.
enum class TapMode : std::uint32_t {
    Latest = LOOPHOLE_TAP_LATEST,  ///< the most recent n samples (scope)
    Next = LOOPHOLE_TAP_NEXT,      ///< the unread ones, oldest first (FFT blocks)
};

/// The static English name of a status. [any-thread]
[[nodiscard]] inline const char* toString(Status s) noexcept {
    return loophole_status_str(static_cast<std::int32_t>(s));
}

/// Why the engine refuses a real-time command.
enum class Reject : std::uint32_t {
    UnknownNode = LOOPHOLE_REJECT_UNKNOWN_NODE,
    UnknownParam = LOOPHOLE_REJECT_UNKNOWN_PARAM,
    OutOfRange = LOOPHOLE_REJECT_OUT_OF_RANGE,
    Unsupported = LOOPHOLE_REJECT_UNSUPPORTED,
};

/// Results of a control request.
enum class ControlResult : std::uint32_t {
    Ok = LOOPHOLE_CONTROL_RESULT_OK,
    UnknownNode = LOOPHOLE_CONTROL_RESULT_UNKNOWN_NODE,
    NodeExists = LOOPHOLE_CONTROL_RESULT_NODE_EXISTS,
    UnknownKind = LOOPHOLE_CONTROL_RESULT_UNKNOWN_KIND,
    Unsupported = LOOPHOLE_CONTROL_RESULT_UNSUPPORTED,
    Failed = LOOPHOLE_CONTROL_RESULT_FAILED,
    OutOfRange = LOOPHOLE_CONTROL_RESULT_OUT_OF_RANGE,
};

/// Outcomes a drain callable returns.
[[nodiscard]] constexpr LoopholeOutcome applied() noexcept {
    return LoopholeOutcome{LOOPHOLE_OUTCOME_APPLIED, 0};
}
[[nodiscard]] constexpr LoopholeOutcome appliedAt(std::uint32_t offset) noexcept {
    return LoopholeOutcome{LOOPHOLE_OUTCOME_APPLIED_AT, offset};
}
[[nodiscard]] constexpr LoopholeOutcome rejected(Reject why) noexcept {
    return LoopholeOutcome{LOOPHOLE_OUTCOME_REJECTED, static_cast<std::uint32_t>(why)};
}

/// The library clock (CLOCK_MONOTONIC, no system call). [any-thread]
[[nodiscard]] inline std::uint64_t nowNs() noexcept { return loophole_now_ns(); }

/// The clock ScopedCallback uses unless told otherwise.
struct LibraryClock {
    std::uint64_t operator()() const noexcept { return loophole_now_ns(); }
};

/// A LoopholeConfig with the defaults filled in.
struct Config : LoopholeConfig {
    Config() noexcept : LoopholeConfig() { (void)loophole_config_init_sized(this, sizeof(LoopholeConfig)); }
};

/// A LoopholeTransport: stopped at 0, 120 bpm, no loop.
struct Transport : LoopholeTransport {
    Transport() noexcept : LoopholeTransport() { (void)loophole_transport_init(this); }
};

namespace detail {
template <class H, void (*Free)(H*)>
class Owner {
public:
    Owner() noexcept = default;
    explicit Owner(H* h) noexcept : h_(h) {}
    ~Owner() { Free(h_); }
    Owner(const Owner&) = delete;
    Owner& operator=(const Owner&) = delete;
    Owner(Owner&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
    Owner& operator=(Owner&& o) noexcept {
        if (this != &o) {
            Free(h_);
            h_ = std::exchange(o.h_, nullptr);
        }
        return *this;
    }
    [[nodiscard]] H* get() const noexcept { return h_; }
    explicit operator bool() const noexcept { return h_ != nullptr; }
    /// Gives up ownership (the caller frees).
    [[nodiscard]] H* release() noexcept { return std::exchange(h_, nullptr); }

protected:
    H* h_ = nullptr;
};
}  // namespace detail

/// The audio thread's endpoint. [audio-thread] for every member but the destructor
/// ([control-thread]: it frees memory). Wait-free; nothing here allocates.
class AudioEndpoint : public detail::Owner<LoopholeAudio, loophole_audio_free> {
public:
    using Owner::Owner;

    void begin(std::uint64_t now_ns, std::uint32_t frames) noexcept {
        loophole_audio_begin(h_, now_ns, frames);
    }

    /// Hands each queued command (within the callback's budget) to `f`, which returns a
    /// LoopholeOutcome. Returns the number of commands answered. `f` is called through a
    /// noexcept trampoline: if it throws, std::terminate is called. `f` must not call this
    /// endpoint (publish*, stats, drain...): the library is inside a call on it.
    template <class F>
    std::uint32_t drain(F&& f) noexcept {
        using Fn = std::remove_reference_t<F>;
        static_assert(std::is_invocable_r_v<LoopholeOutcome, Fn&, const LoopholeCommand&>,
                      "drain: the callable must be LoopholeOutcome(const LoopholeCommand&)");
        void* user = const_cast<void*>(static_cast<const void*>(std::addressof(f)));
        return loophole_audio_drain(h_, &trampoline<Fn>, user);
    }

    void publishMeters(const float* const* channels, std::uint32_t n_channels,
                       std::uint32_t n_frames) noexcept {
        loophole_audio_publish_meters(h_, channels, n_channels, n_frames);
    }
    void publishMetersInterleaved(const float* samples, std::uint32_t n_channels,
                                  std::uint32_t n_frames) noexcept {
        loophole_audio_publish_meters_interleaved(h_, samples, n_channels, n_frames);
    }
    void publishLevels(std::uint32_t channel, float peak, double sum_sq,
                       std::uint64_t frames) noexcept {
        loophole_audio_publish_levels(h_, channel, peak, sum_sq, frames);
    }
    /// Whether the telemetry was queued (dropped and counted when the queue is short).
    bool publishTransport(const LoopholeTransport& t) noexcept {
        return loophole_audio_publish_transport(h_, &t);
    }
    /// Appends one block of a tapped channel to tap `tap`. InvalidArgument if no such tap.
    Status publishTap(std::uint32_t tap, const float* block, std::uint32_t n_frames) noexcept {
        return static_cast<Status>(loophole_audio_publish_tap(h_, tap, block, n_frames));
    }
    void reportXrun() noexcept { loophole_audio_report_xrun(h_); }
    void end(std::uint64_t now_ns) noexcept { loophole_audio_end(h_, now_ns); }
    void setSampleRate(std::uint32_t hz) noexcept { loophole_audio_set_sample_rate(h_, hz); }
    [[nodiscard]] Status stats(LoopholeAudioStats& out) const noexcept {
        out.struct_size = sizeof(LoopholeAudioStats);
        return static_cast<Status>(loophole_audio_stats(h_, &out));
    }

private:
    template <class Fn>
    static LoopholeOutcome trampoline(void* user, const LoopholeCommand* cmd) noexcept {
        return (*static_cast<Fn*>(user))(*cmd);
    }
};

/// One audio callback: begin() now, end() when it goes out of scope, on the same clock.
/// [audio-thread] Not copyable, not movable; allocates nothing.
template <class Clock = LibraryClock>
class ScopedCallback {
public:
    ScopedCallback(AudioEndpoint& ep, std::uint32_t frames, Clock clock = Clock{}) noexcept
        : ep_(ep), clock_(clock) {
        ep_.begin(clock_(), frames);
    }
    ~ScopedCallback() { ep_.end(clock_()); }
    ScopedCallback(const ScopedCallback&) = delete;
    ScopedCallback& operator=(const ScopedCallback&) = delete;
    ScopedCallback(ScopedCallback&&) = delete;
    ScopedCallback& operator=(ScopedCallback&&) = delete;

    template <class F>
    std::uint32_t drain(F&& f) noexcept {
        return ep_.drain(std::forward<F>(f));
    }
    [[nodiscard]] AudioEndpoint& endpoint() noexcept { return ep_; }

private:
    AudioEndpoint& ep_;
    Clock clock_;
};

/// The network side. [control-thread] Its const members are not safe to call from two threads
/// at once: like every handle of loophole_ipc.h, one thread uses it at a time.
class Server : public detail::Owner<LoopholeServer, loophole_server_free> {
public:
    using Owner::Owner;

    [[nodiscard]] Status announcement(char* buf, std::size_t cap,
                                      std::size_t* len = nullptr) const noexcept {
        return static_cast<Status>(loophole_server_announcement(h_, buf, cap, len));
    }
    /// The announcement line (allocates: not for the audio thread). Empty on error.
    [[nodiscard]] std::string announcement() const {
        std::size_t len = 0;
        (void)loophole_server_announcement(h_, nullptr, 0, &len);
        std::string s(len + 1, '\0');
        if (loophole_server_announcement(h_, s.data(), s.size(), &len) != LOOPHOLE_OK) return {};
        s.resize(len);
        return s;
    }
    [[nodiscard]] std::uint16_t port() const noexcept { return loophole_server_port(h_); }
    [[nodiscard]] bool isRunning() const noexcept { return loophole_server_is_running(h_); }
    [[nodiscard]] bool hasClient() const noexcept { return loophole_server_has_client(h_); }
    /// Stops the network thread (owed answers are sent first). Blocks. Idempotent.
    [[nodiscard]] Status shutdown() noexcept {
        return static_cast<Status>(loophole_server_shutdown(h_));
    }
};

/// The analysis worker's handle (from loophole::takeAnalysis). [analysis-thread]: never the
/// audio thread. Nothing here allocates, blocks or makes a system call; submit() copies up to 4096 floats.
class Analysis : public detail::Owner<LoopholeAnalysis, loophole_analysis_free> {
public:
    using Owner::Owner;

    /// Copies up to `cap` active requests into `out`; `count` gets how many.
    [[nodiscard]] Status requests(LoopholeAnalysisRequest* out, std::size_t cap,
                                  std::size_t& count) noexcept {
        return static_cast<Status>(
            loophole_analysis_requests(h_, out, cap, sizeof(LoopholeAnalysisRequest), &count));
    }
    /// Copies samples of `tap` into `out[0..n]`; `info` says which.
    [[nodiscard]] Status readTap(std::uint32_t tap, TapMode mode, float* out, std::size_t n,
                                 LoopholeTapRead& info) noexcept {
        info.struct_size = sizeof(LoopholeTapRead);
        return static_cast<Status>(loophole_analysis_read_tap(
            h_, tap, static_cast<std::uint32_t>(mode), out, n, &info));
    }
    /// Submits `n` values for `req` (Stale is normal: the request changed).
    [[nodiscard]] Status submit(const LoopholeAnalysisRequest& req, std::uint64_t sample,
                                std::uint64_t missed, std::uint32_t param, const float* values,
                                std::size_t n) noexcept {
        return static_cast<Status>(
            loophole_analysis_submit(h_, &req, sample, missed, param, values, n));
    }
    [[nodiscard]] bool isConnected() const noexcept { return loophole_analysis_is_connected(h_); }
};

/// Takes the analysis handle out of `server` (config analysis_taps > 0; once). On error `out`
/// is left empty (a handle it held is freed, like create()'s outputs).
/// [control-thread] Allocates the handle.
[[nodiscard]] inline Status takeAnalysis(Server& server, Analysis& out) noexcept {
    LoopholeAnalysis* a = nullptr;
    auto rc = static_cast<Status>(loophole_server_take_analysis(server.get(), &a));
    out = Analysis(a);
    return rc;
}

/// The control route. [control-thread]
class Control : public detail::Owner<LoopholeControl, loophole_control_free> {
public:
    using Owner::Owner;

    /// Waits up to `timeout_ms` for a request. Ok, Timeout or ServerGone.
    [[nodiscard]] Status recv(LoopholeControlRequest& out, std::uint32_t timeout_ms) noexcept {
        out.struct_size = sizeof(LoopholeControlRequest);
        return static_cast<Status>(loophole_control_recv(h_, timeout_ms, &out));
    }
    [[nodiscard]] Status reply(std::uint64_t ticket, ControlResult r) noexcept {
        return static_cast<Status>(
            loophole_control_reply(h_, ticket, static_cast<std::uint32_t>(r)));
    }
    [[nodiscard]] bool isOrphaned() const noexcept { return loophole_control_is_orphaned(h_); }
};

/// Starts the server and makes the three handles. On error they are left empty and `err` (if
/// given) holds the reason. [control-thread] Allocates; blocks to bind.
[[nodiscard]] inline Status create(const LoopholeConfig& cfg, Server& server,
                                   AudioEndpoint& audio, Control& control,
                                   char* err = nullptr, std::size_t err_cap = 0) noexcept {
    LoopholeServer* s = nullptr;
    LoopholeAudio* a = nullptr;
    LoopholeControl* c = nullptr;
    auto rc = static_cast<Status>(loophole_create(&cfg, &s, &a, &c, err, err_cap));
    server = Server(s);
    audio = AudioEndpoint(a);
    control = Control(c);
    return rc;
}

}  // namespace loophole

#endif  // LOOPHOLE_IPC_HPP

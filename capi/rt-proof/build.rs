//! Compiles the C++ engine callback of capi/examples/signal_cpp (the probe) and the allocation
//! interposer into a static library linked into this crate's tests only.
fn main() {
    let capi = std::path::Path::new("..");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .opt_level(2)
        .warnings_into_errors(true)
        .flag("-Wall")
        .flag("-Wextra")
        .include(capi.join("include"))
        .include(capi.join("examples/juce_stub"))
        .include(capi.join("examples/signal_cpp"))
        .file("cpp/probe.cpp")
        .compile("capi_rt_probe");
    // Plain C (unmangled malloc & co.), its own archive.
    cc::Build::new()
        .opt_level(2)
        .warnings_into_errors(true)
        .flag("-Wall")
        .file("cpp/interpose.c")
        .compile("capi_rt_interpose");
    println!("cargo:rustc-link-lib=stdc++");
    for f in [
        "cpp/probe.cpp",
        "cpp/interpose.c",
        "../examples/signal_cpp/engine.h",
        "../include/loophole_ipc.hpp",
        "../include/loophole_ipc.h",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
}

//! Compiles the WGSL shaders in `shaders/` to SPIR-V in `OUT_DIR` with naga,
//! so no shader binary is checked in and no external compiler is needed.

use std::path::PathBuf;

const SHADERS: &[&str] = &["render"];

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for name in SHADERS {
        let src_path = format!("shaders/{name}.wgsl");
        println!("cargo:rerun-if-changed={src_path}");
        let src = std::fs::read_to_string(&src_path).unwrap_or_else(|e| panic!("{src_path}: {e}"));
        let module = naga::front::wgsl::parse_str(&src)
            .unwrap_or_else(|e| panic!("{}", e.emit_to_string_with_path(&src, &src_path)));
        let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::empty())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}", e.emit_to_string_with_path(&src, &src_path)));
        // Clamp buffer indices: a bug on the CPU side must not read or
        // write outside a buffer on the device.
        let restrict = naga::proc::BoundsCheckPolicy::Restrict;
        let opts = naga::back::spv::Options {
            // SPIR-V 1.0 runs on any Vulkan 1.0+ driver.
            lang_version: (1, 0),
            bounds_check_policies: naga::proc::BoundsCheckPolicies {
                buffer: restrict,
                index: restrict,
                ..Default::default()
            },
            ..Default::default()
        };
        let words = naga::back::spv::write_vec(&module, &info, &opts, None)
            .unwrap_or_else(|e| panic!("{src_path}: SPIR-V: {e}"));
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        std::fs::write(out.join(format!("{name}.spv")), bytes).expect("writing SPIR-V to OUT_DIR");
    }
}

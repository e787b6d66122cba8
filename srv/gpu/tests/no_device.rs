//! No usable device is an error, never a panic. Its own test binary: it
//! changes the environment, which other tests' renderers read.

use mesh_gpu::{GpuError, GpuService, Renderer, DEVICE_ENV};

#[test]
fn missing_devices_are_errors() {
    // A name no device has: the error lists the devices there are.
    std::env::set_var(DEVICE_ENV, "no-such-gpu-anywhere");
    match Renderer::new() {
        Err(GpuError::NoDevice(why)) => assert!(why.contains("no-such-gpu-anywhere"), "{why}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(r) => panic!("picked {}", r.device_name()),
    }
    assert!(matches!(GpuService::new(), Err(GpuError::NoDevice(_))));
    std::env::remove_var(DEVICE_ENV);
    // No driver at all: the loader is told to look only at a missing file.
    std::env::set_var("VK_ICD_FILENAMES", "/nonexistent/icd.json");
    std::env::set_var("VK_DRIVER_FILES", "/nonexistent/icd.json");
    match Renderer::new() {
        Err(e @ (GpuError::NoDevice(_) | GpuError::NoLoader(_))) => eprintln!("as expected: {e}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(r) => panic!("picked {}", r.device_name()),
    }
}

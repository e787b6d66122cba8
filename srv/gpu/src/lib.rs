//! The `gpu` service kind: screen [`Snapshot`](mesh_frame::Snapshot)s in,
//! RGBA [`Frame`](mesh_frame::Frame)s out, rendered on a Vulkan device
//! through ash. A session's [`End`](mesh_frame::End) passes through.
//!
//! Any Vulkan 1.1 device with a compute queue works: Mesa's lavapipe
//! (Debian: `mesa-vulkan-drivers`, with `libvulkan1`), or a real GPU. The
//! loader is opened at run time, so building needs no Vulkan SDK, and a
//! machine without a loader or device gets a [`GpuError`], not a crash.
//! Which device: `MESH_GPU_DEVICE=<part of its name>` picks one; otherwise
//! discrete, then integrated, then virtual, then CPU. The service's
//! [`GpuService::device_name`] names it for the `info`/`status` files.
//!
//! How a frame is made: each cell is 8x16 pixels ([`CELL_W`] x
//! [`CELL_H`]), so an 80x24 screen is a 640x384 frame. The host resolves
//! every cell (glyph, colours after inverse and cursor, underline and
//! italic flags) into a storage buffer; a compute shader, one invocation a
//! pixel, samples the font atlas, which was uploaded to the device once,
//! blends foreground over background by the glyph's coverage and writes
//! RGBA into a mapped buffer the host copies out. Bold uses the bold
//! font; underline is a line on the second row from the bottom; italic
//! slants the glyph; inverse swaps colours; the cursor is an inverse
//! block. Buffers are remade only when the screen size changes.
//!
//! The shader is WGSL (`shaders/render.wgsl`), compiled to SPIR-V at build
//! time by naga in `build.rs`; no binary is checked in.
//!
//! Modules:
//! - `font`: the glyph atlas (Noto Sans Mono, plus an 8x8 font for box
//!   drawing, blocks and Greek) and the character-to-glyph map.
//! - `grid`: the cell grid as the shader reads it.
//! - `gpu`: loader, instance, device choice, device, mapped buffers.
//! - `renderer`: the compute pipeline; [`Renderer`].
//! - `service`: the `gpu` service on a render thread; [`GpuService`].

mod font;
mod gpu;
mod grid;
mod renderer;
mod service;

pub use font::{CELL_H, CELL_W};
pub use gpu::DEVICE_ENV;
pub use renderer::Renderer;
pub use service::GpuService;

/// Why a frame could not be made.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No Vulkan loader (`libvulkan.so.1`) could be opened.
    #[error("gpu: no Vulkan loader (install libvulkan1 and mesa-vulkan-drivers): {0}")]
    NoLoader(String),
    /// No device fits (none at all, too old, or none matching `MESH_GPU_DEVICE`).
    #[error("gpu: no usable Vulkan device: {0}")]
    NoDevice(String),
    /// A Vulkan call failed.
    #[error("gpu: {what}: {result}")]
    Vulkan { what: &'static str, result: ash::vk::Result },
    /// The snapshot's cells do not match its size.
    #[error("gpu: bad snapshot: {0}")]
    BadSnapshot(String),
    /// The frame would exceed what the renderer or device allows.
    #[error("gpu: frame too large: {0}")]
    TooLarge(String),
    /// An earlier failure left this renderer unusable.
    #[error("gpu: renderer failed earlier and must be remade")]
    Broken,
    /// The render thread is gone.
    #[error("gpu: render thread stopped")]
    Stopped,
}

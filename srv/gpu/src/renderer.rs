//! The renderer: a compute pipeline that turns a snapshot into a frame.
//!
//! Made once: the pipeline, one descriptor set, one command buffer, one
//! fence, and the font atlas in device memory. Per screen size (remade
//! only when the size changes): the grid buffer the host fills, the frame
//! buffer the shader writes, and the recorded command buffer, which is
//! then resubmitted unchanged every frame. A frame is: fill the grid,
//! submit, wait for the fence, copy the pixels out.
//!
//! Memory: every buffer is host-visible and stays mapped. The grid and
//! atlas prefer device-local memory (a GPU's BAR heap), the frame prefers
//! host-cached memory, because the CPU reads all of it back; a GPU writing
//! one frame (about 1 MiB) over the bus is far cheaper than a staging copy
//! would be to code and run at 30 frames a second.

use std::io::Cursor;
use std::time::Duration;

use ash::vk;
use bytes::Bytes;
use mesh_frame::{Frame, Snapshot};

use crate::font::Atlas;
use crate::gpu::{vkerr, Buffer, Gpu};
use crate::{grid, GpuError};

/// The shader, compiled from `shaders/render.wgsl` by build.rs.
const SHADER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/render.spv"));
/// The shader's workgroup size, both ways (`@workgroup_size(8, 8)`).
const GROUP: u32 = 8;
/// The largest frame rendered: 4096 x 4096.
const MAX_PIXELS: u64 = 1 << 24;
/// How long one frame may take before the device is taken for hung.
const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// Renders snapshots to RGBA frames on one Vulkan device. Not `Send`: it
/// holds mapped memory; [`crate::GpuService`] gives it a thread of its own.
pub struct Renderer {
    atlas: Atlas,
    set_layout: vk::DescriptorSetLayout,
    pipeline_layout: vk::PipelineLayout,
    pipeline: vk::Pipeline,
    desc_pool: vk::DescriptorPool,
    set: vk::DescriptorSet,
    cmd_pool: vk::CommandPool,
    cmd: vk::CommandBuffer,
    fence: vk::Fence,
    atlas_buf: Buffer,
    grid_buf: Buffer,
    frame_buf: Buffer,
    /// The (cols, rows) the grid and frame buffers and `cmd` are made for.
    size: Option<(u16, u16)>,
    /// Set when a submission failed or hung: the device may still be using
    /// the buffers, so nothing may be rendered with this renderer again.
    broken: bool,
    // Declared last: dropped after `Drop::drop` destroyed its children.
    gpu: Gpu,
}

impl Renderer {
    /// Opens the Vulkan device (see the crate doc for which one) and
    /// uploads the font.
    pub fn new() -> Result<Renderer, GpuError> {
        let gpu = Gpu::new()?;
        let mut r = Renderer {
            atlas: Atlas::new(),
            set_layout: vk::DescriptorSetLayout::null(),
            pipeline_layout: vk::PipelineLayout::null(),
            pipeline: vk::Pipeline::null(),
            desc_pool: vk::DescriptorPool::null(),
            set: vk::DescriptorSet::null(),
            cmd_pool: vk::CommandPool::null(),
            cmd: vk::CommandBuffer::null(),
            fence: vk::Fence::null(),
            atlas_buf: Buffer::default(),
            grid_buf: Buffer::default(),
            frame_buf: Buffer::default(),
            size: None,
            broken: false,
            gpu,
        };
        // On failure `r` is dropped, which destroys what was made so far.
        r.init()?;
        Ok(r)
    }

    /// The name of the device, as its driver gives it.
    pub fn device_name(&self) -> &str {
        &self.gpu.name
    }

    /// Whether this renderer failed for good and must be replaced.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Renders one snapshot: `cols * 8` x `rows * 16` pixels, with the
    /// snapshot's `seq` and `pts_us`.
    pub fn render(&mut self, snap: &Snapshot) -> Result<Frame, GpuError> {
        if self.broken {
            return Err(GpuError::Broken);
        }
        snap.validate().map_err(|e| GpuError::BadSnapshot(e.0))?;
        if self.size != Some((snap.cols, snap.rows)) {
            self.resize(snap.cols, snap.rows)?;
        }
        grid::pack(snap, &self.atlas, self.grid_buf.words_mut());
        self.grid_buf.flush(&self.gpu)?;
        let d = &self.gpu.device;
        let cmds = [self.cmd];
        let submit = vk::SubmitInfo::default().command_buffers(&cmds);
        // SAFETY: the fence is not in use (the last frame was waited for),
        // the command buffer is recorded and not pending.
        let done = unsafe {
            d.reset_fences(&[self.fence])
                .and_then(|()| d.queue_submit(self.gpu.queue, &[submit], self.fence))
                .and_then(|()| d.wait_for_fences(&[self.fence], true, FRAME_TIMEOUT.as_nanos() as u64))
        };
        if let Err(result) = done {
            self.broken = true;
            return Err(GpuError::Vulkan { what: "render", result });
        }
        self.frame_buf.invalidate(&self.gpu)?;
        let (width, height) = grid::frame_size(snap.cols, snap.rows);
        let len = width as usize * height as usize * 4;
        let rgba = Bytes::copy_from_slice(&self.frame_buf.bytes()[..len]);
        Ok(Frame { seq: snap.seq, pts_us: snap.pts_us, width, height, rgba })
    }

    fn init(&mut self) -> Result<(), GpuError> {
        let d = &self.gpu.device;
        let bindings: Vec<_> = (0..3)
            .map(|b| {
                vk::DescriptorSetLayoutBinding::default()
                    .binding(b)
                    .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                    .descriptor_count(1)
                    .stage_flags(vk::ShaderStageFlags::COMPUTE)
            })
            .collect();
        let info = vk::DescriptorSetLayoutCreateInfo::default().bindings(&bindings);
        // SAFETY (this block and those below): valid create infos that live
        // across each call; each handle is stored at once, so Drop frees it
        // whatever fails next.
        self.set_layout = unsafe { d.create_descriptor_set_layout(&info, None) }.map_err(vkerr("create set layout"))?;
        let layouts = [self.set_layout];
        let info = vk::PipelineLayoutCreateInfo::default().set_layouts(&layouts);
        self.pipeline_layout =
            unsafe { d.create_pipeline_layout(&info, None) }.map_err(vkerr("create pipeline layout"))?;
        self.pipeline = self.make_pipeline()?;

        let sizes = [vk::DescriptorPoolSize { ty: vk::DescriptorType::STORAGE_BUFFER, descriptor_count: 3 }];
        let info = vk::DescriptorPoolCreateInfo::default().max_sets(1).pool_sizes(&sizes);
        self.desc_pool = unsafe { d.create_descriptor_pool(&info, None) }.map_err(vkerr("create descriptor pool"))?;
        let info = vk::DescriptorSetAllocateInfo::default().descriptor_pool(self.desc_pool).set_layouts(&layouts);
        self.set = unsafe { d.allocate_descriptor_sets(&info) }.map_err(vkerr("allocate descriptor set"))?[0];

        // Re-recorded on each size change, so resettable.
        let info = vk::CommandPoolCreateInfo::default()
            .queue_family_index(self.gpu.queue_family)
            .flags(vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER);
        self.cmd_pool = unsafe { d.create_command_pool(&info, None) }.map_err(vkerr("create command pool"))?;
        let info = vk::CommandBufferAllocateInfo::default()
            .command_pool(self.cmd_pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(1);
        self.cmd = unsafe { d.allocate_command_buffers(&info) }.map_err(vkerr("allocate command buffer"))?[0];
        self.fence = unsafe { d.create_fence(&vk::FenceCreateInfo::default(), None) }.map_err(vkerr("create fence"))?;

        // The font, once: "in GPU memory" for the device's whole life.
        let glyphs = self.atlas.bytes();
        self.atlas_buf = Buffer::new(&self.gpu, glyphs.len() as u64, vk::MemoryPropertyFlags::DEVICE_LOCAL)?;
        for (w, c) in self.atlas_buf.words_mut().iter_mut().zip(glyphs.chunks_exact(4)) {
            *w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        self.atlas_buf.flush(&self.gpu)?;
        self.bind(1, &self.atlas_buf);
        Ok(())
    }

    fn make_pipeline(&self) -> Result<vk::Pipeline, GpuError> {
        let d = &self.gpu.device;
        // Only fails if build.rs wrote a truncated file: a broken build.
        let code = ash::util::read_spv(&mut Cursor::new(SHADER)).expect("build.rs writes whole SPIR-V words");
        let info = vk::ShaderModuleCreateInfo::default().code(&code);
        // SAFETY: SPIR-V produced and validated by naga at build time.
        let module = unsafe { d.create_shader_module(&info, None) }.map_err(vkerr("create shader module"))?;
        let stage = vk::PipelineShaderStageCreateInfo::default()
            .stage(vk::ShaderStageFlags::COMPUTE)
            .module(module)
            .name(c"main");
        let info = vk::ComputePipelineCreateInfo::default().stage(stage).layout(self.pipeline_layout);
        // SAFETY: valid infos; the module is no longer needed once the
        // pipeline exists (or failed), so it is destroyed either way.
        let made = unsafe { d.create_compute_pipelines(vk::PipelineCache::null(), &[info], None) };
        unsafe { d.destroy_shader_module(module, None) };
        made.map(|p| p[0]).map_err(|(_, e)| GpuError::Vulkan { what: "create pipeline", result: e })
    }

    /// Points descriptor `binding` at `buf`.
    fn bind(&self, binding: u32, buf: &Buffer) {
        let info = [vk::DescriptorBufferInfo { buffer: buf.raw, offset: 0, range: vk::WHOLE_SIZE }];
        let write = vk::WriteDescriptorSet::default()
            .dst_set(self.set)
            .dst_binding(binding)
            .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
            .buffer_info(&info);
        // SAFETY: the set is not in use by a pending command buffer (every
        // frame is waited for before the next call).
        unsafe { self.gpu.device.update_descriptor_sets(&[write], &[]) };
    }

    /// Makes the size-dependent buffers and records the command buffer.
    fn resize(&mut self, cols: u16, rows: u16) -> Result<(), GpuError> {
        let (width, height) = grid::frame_size(cols, rows);
        let pixels = width as u64 * height as u64;
        let limits = &self.gpu.limits;
        if pixels > MAX_PIXELS
            || pixels * 4 > limits.max_storage_buffer_range as u64
            || width / GROUP > limits.max_compute_work_group_count[0]
            || height / GROUP > limits.max_compute_work_group_count[1]
        {
            return Err(GpuError::TooLarge(format!("{cols}x{rows} cells, {width}x{height} pixels")));
        }
        self.size = None;
        let d = &self.gpu.device;
        // Nothing is pending: every frame was waited for.
        self.grid_buf.destroy(d);
        self.frame_buf.destroy(d);
        self.grid_buf =
            Buffer::new(&self.gpu, grid::words(cols, rows) as u64 * 4, vk::MemoryPropertyFlags::DEVICE_LOCAL)?;
        self.frame_buf = Buffer::new(&self.gpu, pixels * 4, vk::MemoryPropertyFlags::HOST_CACHED)?;
        self.bind(0, &self.grid_buf);
        self.bind(2, &self.frame_buf);
        self.record(width.div_ceil(GROUP), height.div_ceil(GROUP))?;
        self.size = Some((cols, rows));
        tracing::debug!(cols, rows, width, height, "gpu: buffers made");
        Ok(())
    }

    fn record(&self, groups_x: u32, groups_y: u32) -> Result<(), GpuError> {
        let d = &self.gpu.device;
        let c = self.cmd;
        // Shader writes must reach the host before it reads the frame.
        let to_host = vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::SHADER_WRITE)
            .dst_access_mask(vk::AccessFlags::HOST_READ);
        // SAFETY: the command buffer is not pending (see `bind`); its pool
        // allows resetting, which begin does implicitly.
        unsafe {
            d.begin_command_buffer(c, &vk::CommandBufferBeginInfo::default()).map_err(vkerr("begin commands"))?;
            d.cmd_bind_pipeline(c, vk::PipelineBindPoint::COMPUTE, self.pipeline);
            d.cmd_bind_descriptor_sets(c, vk::PipelineBindPoint::COMPUTE, self.pipeline_layout, 0, &[self.set], &[]);
            d.cmd_dispatch(c, groups_x, groups_y, 1);
            d.cmd_pipeline_barrier(
                c,
                vk::PipelineStageFlags::COMPUTE_SHADER,
                vk::PipelineStageFlags::HOST,
                vk::DependencyFlags::empty(),
                &[to_host],
                &[],
                &[],
            );
            d.end_command_buffer(c).map_err(vkerr("end commands"))
        }
    }
}

impl Drop for Renderer {
    fn drop(&mut self) {
        let d = &self.gpu.device;
        // SAFETY: after waiting for the device nothing is in use; every
        // handle is either live and made from `d`, or null (a no-op).
        // Children go before their parents; the command buffer and the
        // descriptor set are freed with their pools.
        unsafe {
            let _ = d.device_wait_idle();
            self.grid_buf.destroy(d);
            self.frame_buf.destroy(d);
            self.atlas_buf.destroy(d);
            d.destroy_fence(self.fence, None);
            d.destroy_command_pool(self.cmd_pool, None);
            d.destroy_descriptor_pool(self.desc_pool, None);
            d.destroy_pipeline(self.pipeline, None);
            d.destroy_pipeline_layout(self.pipeline_layout, None);
            d.destroy_descriptor_set_layout(self.set_layout, None);
        }
    }
}

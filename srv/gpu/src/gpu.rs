//! The Vulkan device: the loader (opened at run time), an instance, the
//! chosen physical device, a logical device with one compute queue, and
//! host-mapped buffers.
//!
//! Device choice: `MESH_GPU_DEVICE`, when set, is a case-insensitive
//! substring of the device name and must match; otherwise a discrete GPU
//! wins over an integrated one, over a virtual one, over a CPU (lavapipe).
//! Only Vulkan 1.1+ devices with a compute queue count.

use std::ffi::CStr;

use ash::vk;

use crate::GpuError;

/// The environment variable that picks a device by name.
pub const DEVICE_ENV: &str = "MESH_GPU_DEVICE";

/// Maps a Vulkan failure to a [`GpuError`] saying what was being done.
pub(crate) fn vkerr(what: &'static str) -> impl Fn(vk::Result) -> GpuError {
    move |result| GpuError::Vulkan { what, result }
}

/// The instance, with the loader it came from: destroyed last.
struct Instance {
    // Kept alive: the instance's function pointers live in this library.
    _entry: ash::Entry,
    raw: ash::Instance,
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: every child (the device) is destroyed before this runs:
        // `Gpu::drop` destroys the device, then drops this field.
        unsafe { self.raw.destroy_instance(None) }
    }
}

/// A device ready for compute work.
pub(crate) struct Gpu {
    pub device: ash::Device,
    pub queue: vk::Queue,
    pub queue_family: u32,
    pub limits: vk::PhysicalDeviceLimits,
    pub name: String,
    memory: vk::PhysicalDeviceMemoryProperties,
    // Declared last: dropped after `Drop::drop` destroyed the device.
    _instance: Instance,
}

/// A physical device as the choice sees it.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub name: String,
    pub kind: vk::PhysicalDeviceType,
}

/// Which of `devices` to use: the first whose name contains `want`
/// (ignoring case) when given, else the best kind, first on ties.
pub(crate) fn choose(devices: &[Candidate], want: Option<&str>) -> Result<usize, String> {
    if devices.is_empty() {
        return Err("no Vulkan 1.1 device with a compute queue (install mesa-vulkan-drivers for lavapipe)".into());
    }
    if let Some(want) = want {
        let w = want.to_lowercase();
        return devices.iter().position(|d| d.name.to_lowercase().contains(&w)).ok_or_else(|| {
            let names: Vec<_> = devices.iter().map(|d| d.name.as_str()).collect();
            format!("{DEVICE_ENV}={want} matches none of: {}", names.join(", "))
        });
    }
    let rank = |k: vk::PhysicalDeviceType| match k {
        vk::PhysicalDeviceType::DISCRETE_GPU => 0,
        vk::PhysicalDeviceType::INTEGRATED_GPU => 1,
        vk::PhysicalDeviceType::VIRTUAL_GPU => 2,
        vk::PhysicalDeviceType::CPU => 3,
        _ => 4,
    };
    Ok(devices.iter().enumerate().min_by_key(|(i, d)| (rank(d.kind), *i)).map_or(0, |(i, _)| i))
}

impl Gpu {
    pub fn new() -> Result<Gpu, GpuError> {
        // SAFETY: loading libvulkan runs its initialisers; it is the
        // system's Vulkan loader, trusted like any shared library we link.
        let entry = unsafe { ash::Entry::load() }.map_err(|e| GpuError::NoLoader(e.to_string()))?;
        // SAFETY: a plain query on a loaded entry.
        let version = unsafe { entry.try_enumerate_instance_version() }.map_err(vkerr("enumerate instance version"))?;
        if version.unwrap_or(vk::API_VERSION_1_0) < vk::API_VERSION_1_1 {
            return Err(GpuError::NoDevice("the Vulkan loader supports only 1.0; 1.1 is needed".into()));
        }
        let app = vk::ApplicationInfo::default()
            .application_name(c"mesh-gpu")
            .engine_name(c"mesh")
            .api_version(vk::API_VERSION_1_1);
        let info = vk::InstanceCreateInfo::default().application_info(&app);
        // SAFETY: `info` and what it points to live across the call.
        let raw = unsafe { entry.create_instance(&info, None) }.map_err(|e| match e {
            vk::Result::ERROR_INCOMPATIBLE_DRIVER => {
                GpuError::NoDevice(format!("{e} (install mesa-vulkan-drivers for lavapipe)"))
            }
            e => GpuError::Vulkan { what: "create instance", result: e },
        })?;
        let instance = Instance { _entry: entry, raw };
        let inst = &instance.raw;

        // SAFETY: queries on a live instance.
        let pdevs = unsafe { inst.enumerate_physical_devices() }.map_err(vkerr("enumerate devices"))?;
        let mut usable = Vec::new();
        for pd in pdevs {
            // SAFETY: `pd` comes from this instance.
            let props = unsafe { inst.get_physical_device_properties(pd) };
            let families = unsafe { inst.get_physical_device_queue_family_properties(pd) };
            let family =
                families.iter().position(|f| f.queue_flags.contains(vk::QueueFlags::COMPUTE) && f.queue_count > 0);
            let (Some(family), true) = (family, props.api_version >= vk::API_VERSION_1_1) else { continue };
            let name = props
                .device_name_as_c_str()
                .map_or_else(|_| "unnamed device".into(), |s: &CStr| s.to_string_lossy().into_owned());
            usable.push((pd, family as u32, props, Candidate { name, kind: props.device_type }));
        }
        let cands: Vec<Candidate> = usable.iter().map(|u| u.3.clone()).collect();
        let want = std::env::var(DEVICE_ENV).ok().filter(|s| !s.is_empty());
        let i = choose(&cands, want.as_deref()).map_err(GpuError::NoDevice)?;
        let (pd, queue_family, props, cand) = usable.swap_remove(i);

        let prio = [1.0f32];
        let queues = [vk::DeviceQueueCreateInfo::default().queue_family_index(queue_family).queue_priorities(&prio)];
        let dinfo = vk::DeviceCreateInfo::default().queue_create_infos(&queues);
        // SAFETY: `pd` is from this instance; `dinfo` lives across the call.
        let device = unsafe { inst.create_device(pd, &dinfo, None) }.map_err(vkerr("create device"))?;
        // SAFETY: queue 0 of the family was asked for at creation.
        let queue = unsafe { device.get_device_queue(queue_family, 0) };
        let memory = unsafe { inst.get_physical_device_memory_properties(pd) };
        tracing::info!(device = %cand.name, kind = ?cand.kind, "gpu: using Vulkan device");
        Ok(Gpu { device, queue, queue_family, limits: props.limits, name: cand.name, memory, _instance: instance })
    }

    /// A memory type allowed by `bits` with `need`, preferring one that
    /// also has `want`.
    fn memory_type(
        &self,
        bits: u32,
        need: vk::MemoryPropertyFlags,
        want: vk::MemoryPropertyFlags,
    ) -> Option<(u32, vk::MemoryPropertyFlags)> {
        let types = &self.memory.memory_types[..self.memory.memory_type_count as usize];
        let find = |flags: vk::MemoryPropertyFlags| {
            types
                .iter()
                .enumerate()
                .find(|(i, t)| bits >> i & 1 == 1 && t.property_flags.contains(flags))
                .map(|(i, t)| (i as u32, t.property_flags))
        };
        find(need | want).or_else(|| find(need))
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        // SAFETY: the renderer destroyed every object made from this device
        // before dropping it; waiting first means none is still in use.
        unsafe {
            let _ = self.device.device_wait_idle();
            self.device.destroy_device(None);
        }
    }
}

/// A storage buffer in host-visible memory, mapped for its whole life.
/// Made of null handles when empty; [`Buffer::destroy`] frees it.
pub(crate) struct Buffer {
    pub raw: vk::Buffer,
    pub size: u64,
    mem: vk::DeviceMemory,
    ptr: *mut u8,
    coherent: bool,
}

impl Default for Buffer {
    fn default() -> Self {
        Buffer {
            raw: vk::Buffer::null(),
            size: 0,
            mem: vk::DeviceMemory::null(),
            ptr: std::ptr::null_mut(),
            coherent: true,
        }
    }
}

impl Buffer {
    /// A buffer of `size` bytes, in memory with `want` if there is some.
    pub fn new(gpu: &Gpu, size: u64, want: vk::MemoryPropertyFlags) -> Result<Buffer, GpuError> {
        let mut b = Buffer { size, ..Default::default() };
        match b.make(gpu, want) {
            Ok(()) => Ok(b),
            Err(e) => {
                b.destroy(&gpu.device);
                Err(e)
            }
        }
    }

    fn make(&mut self, gpu: &Gpu, want: vk::MemoryPropertyFlags) -> Result<(), GpuError> {
        let d = &gpu.device;
        let info = vk::BufferCreateInfo::default()
            .size(self.size)
            .usage(vk::BufferUsageFlags::STORAGE_BUFFER)
            .sharing_mode(vk::SharingMode::EXCLUSIVE);
        // SAFETY: valid create info; the handle is stored before anything
        // else can fail, so `destroy` frees it.
        self.raw = unsafe { d.create_buffer(&info, None) }.map_err(vkerr("create buffer"))?;
        let req = unsafe { d.get_buffer_memory_requirements(self.raw) };
        let (index, flags) = gpu.memory_type(req.memory_type_bits, vk::MemoryPropertyFlags::HOST_VISIBLE, want).ok_or(
            GpuError::Vulkan { what: "find host-visible memory", result: vk::Result::ERROR_OUT_OF_DEVICE_MEMORY },
        )?;
        self.coherent = flags.contains(vk::MemoryPropertyFlags::HOST_COHERENT);
        let alloc = vk::MemoryAllocateInfo::default().allocation_size(req.size).memory_type_index(index);
        // SAFETY: as above; the memory type comes from this device.
        self.mem = unsafe { d.allocate_memory(&alloc, None) }.map_err(vkerr("allocate memory"))?;
        unsafe { d.bind_buffer_memory(self.raw, self.mem, 0) }.map_err(vkerr("bind memory"))?;
        // SAFETY: host-visible memory, not mapped yet; it stays mapped
        // until freed (freeing unmaps it).
        self.ptr = unsafe { d.map_memory(self.mem, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty()) }
            .map_err(vkerr("map memory"))?
            .cast();
        Ok(())
    }

    /// The mapped bytes. Only touched while the device does not use the
    /// buffer: the renderer waits for each frame's fence.
    pub fn bytes(&self) -> &[u8] {
        if self.ptr.is_null() {
            return &[];
        }
        // SAFETY: `ptr` maps `size` bytes for as long as `self` holds them.
        unsafe { std::slice::from_raw_parts(self.ptr, self.size as usize) }
    }

    /// The mapped memory as words (the map is aligned to at least 64 bytes).
    pub fn words_mut(&mut self) -> &mut [u32] {
        if self.ptr.is_null() {
            return &mut [];
        }
        // SAFETY: as `bytes`; the mapping's alignment is at least
        // minMemoryMapAlignment (64), and `&mut self` makes it exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.cast::<u32>(), self.size as usize / 4) }
    }

    /// Makes host writes visible to the device (needed for non-coherent memory).
    pub fn flush(&self, gpu: &Gpu) -> Result<(), GpuError> {
        if self.coherent {
            return Ok(());
        }
        let range = vk::MappedMemoryRange::default().memory(self.mem).size(vk::WHOLE_SIZE);
        // SAFETY: `mem` is mapped; the whole range is always aligned.
        unsafe { gpu.device.flush_mapped_memory_ranges(&[range]) }.map_err(vkerr("flush memory"))
    }

    /// Makes device writes visible to the host (needed for non-coherent memory).
    pub fn invalidate(&self, gpu: &Gpu) -> Result<(), GpuError> {
        if self.coherent {
            return Ok(());
        }
        let range = vk::MappedMemoryRange::default().memory(self.mem).size(vk::WHOLE_SIZE);
        // SAFETY: as `flush`.
        unsafe { gpu.device.invalidate_mapped_memory_ranges(&[range]) }.map_err(vkerr("invalidate memory"))
    }

    /// Frees the buffer and its memory, leaving an empty one. The device
    /// must be done with it.
    pub fn destroy(&mut self, device: &ash::Device) {
        // SAFETY: the caller waited for the device; null handles are no-ops.
        unsafe {
            device.destroy_buffer(self.raw, None);
            device.free_memory(self.mem, None);
        }
        *self = Buffer::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, kind: vk::PhysicalDeviceType) -> Candidate {
        Candidate { name: name.into(), kind }
    }

    #[test]
    fn prefers_discrete_then_integrated_then_cpu() {
        use vk::PhysicalDeviceType as T;
        let cpu = c("llvmpipe (LLVM 15)", T::CPU);
        let igpu = c("Intel UHD 620", T::INTEGRATED_GPU);
        let dgpu = c("NVIDIA H100", T::DISCRETE_GPU);
        assert_eq!(choose(&[cpu.clone(), igpu.clone(), dgpu.clone()], None), Ok(2));
        assert_eq!(choose(&[cpu.clone(), igpu.clone()], None), Ok(1));
        assert_eq!(choose(std::slice::from_ref(&cpu), None), Ok(0));
        assert_eq!(choose(&[cpu.clone(), dgpu.clone()], Some("LLVMpipe")), Ok(0));
        let e = choose(&[cpu, dgpu], Some("radeon")).unwrap_err();
        assert!(e.contains("llvmpipe") && e.contains("H100"), "{e}");
        assert!(choose(&[], None).is_err());
    }
}

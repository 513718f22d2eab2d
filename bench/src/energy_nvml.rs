//! GPU energy for `--device cuda` runs (feature `cuda`): NVML's total-energy counter
//! (`nvmlDeviceGetTotalEnergyConsumption`, millijoules since the driver loaded, Volta and
//! later) of the GPU the benchmark runs on, read through [`crate::energy::measure_with`] like
//! the CPU's RAPL counters. NVML is loaded at run time (`libnvidia-ml.so.1`, installed with the
//! NVIDIA driver) through `libloading`, so the build needs neither NVML nor a GPU; wherever it
//! cannot be loaded, initialized, the device found or its counter read, the meter is absent and
//! the report says "not measurable here: NVML: <why>".
//!
//! The CUDA device is matched to its NVML handle by PCI bus id (NVML numbers devices without
//! regard to `CUDA_VISIBLE_DEVICES`).

use crate::energy::{EnergyMeter, Meter};
use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::CudaContext;
use libloading::Library;
use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void, CStr, CString};

/// The library's file name.
pub const NVML_LIBRARY: &str = "libnvidia-ml.so.1";

type Device = *mut c_void;
type Init = unsafe extern "C" fn() -> c_int;
type Shutdown = unsafe extern "C" fn() -> c_int;
type ErrorString = unsafe extern "C" fn(c_int) -> *const c_char;
type HandleByPciBusId = unsafe extern "C" fn(*const c_char, *mut Device) -> c_int;
type TotalEnergy = unsafe extern "C" fn(Device, *mut c_ulonglong) -> c_int;
type Name = unsafe extern "C" fn(Device, *mut c_char, c_uint) -> c_int;

/// NVML, loaded and initialized (shut down on drop, before the library is unloaded).
pub struct Nvml {
    shutdown: Shutdown,
    error_string: ErrorString,
    by_pci: HandleByPciBusId,
    energy: TotalEnergy,
    name: Name,
    // Declared last: dropped after `Drop::drop` has shut NVML down.
    _lib: Library,
}

impl Nvml {
    /// Loads and initializes NVML; the error says which step failed.
    pub fn open() -> Result<Self, String> {
        // SAFETY: loading the NVIDIA management library runs only its initializers.
        let lib = unsafe { Library::new(NVML_LIBRARY) }
            .map_err(|e| format!("NVML: could not load {NVML_LIBRARY} ({e})"))?;
        // SAFETY: each symbol is looked up by its documented name and given its C signature
        // from nvml.h; the pointers are used only while `lib` is loaded (it is kept in `Nvml`).
        unsafe {
            let init = *lib.get::<Init>(b"nvmlInit_v2\0").map_err(missing)?;
            let error_string = *lib
                .get::<ErrorString>(b"nvmlErrorString\0")
                .map_err(missing)?;
            let shutdown = *lib.get::<Shutdown>(b"nvmlShutdown\0").map_err(missing)?;
            let by_pci = *lib
                .get::<HandleByPciBusId>(b"nvmlDeviceGetHandleByPciBusId_v2\0")
                .map_err(missing)?;
            let energy = *lib
                .get::<TotalEnergy>(b"nvmlDeviceGetTotalEnergyConsumption\0")
                .map_err(missing)?;
            let name = *lib.get::<Name>(b"nvmlDeviceGetName\0").map_err(missing)?;
            let rc = init();
            if rc != 0 {
                return Err(format!(
                    "NVML: nvmlInit failed: {}",
                    error_text(error_string, rc)
                ));
            }
            Ok(Nvml {
                shutdown,
                error_string,
                by_pci,
                energy,
                name,
                _lib: lib,
            })
        }
    }

    /// NVML's text of a return code.
    fn error(&self, rc: c_int) -> String {
        error_text(self.error_string, rc)
    }

    /// The device at PCI bus id `bus_id` ("domain:bus:device.function", hexadecimal).
    fn device(&self, bus_id: &str) -> Result<Device, String> {
        let id = CString::new(bus_id).map_err(|e| format!("NVML: bus id {bus_id:?}: {e}"))?;
        let mut device: Device = std::ptr::null_mut();
        // SAFETY: a NUL-terminated string and a valid out pointer.
        let rc = unsafe { (self.by_pci)(id.as_ptr(), &mut device) };
        if rc != 0 {
            return Err(format!(
                "NVML: no device at PCI bus id {bus_id}: {}",
                self.error(rc)
            ));
        }
        Ok(device)
    }

    /// The device's total-energy counter in millijoules.
    fn energy_mj(&self, device: Device) -> Result<u64, String> {
        let mut mj: c_ulonglong = 0;
        // SAFETY: a handle from this NVML and a valid out pointer.
        let rc = unsafe { (self.energy)(device, &mut mj) };
        if rc != 0 {
            return Err(format!(
                "NVML: nvmlDeviceGetTotalEnergyConsumption: {}",
                self.error(rc)
            ));
        }
        Ok(mj)
    }

    /// The device's name as NVML reports it.
    fn name(&self, device: Device) -> String {
        let mut buf = [0 as c_char; 96];
        // SAFETY: a handle from this NVML and a buffer of the length passed.
        let rc = unsafe { (self.name)(device, buf.as_mut_ptr(), buf.len() as c_uint) };
        if rc != 0 {
            return "unknown GPU".into();
        }
        // SAFETY: NVML NUL-terminates within the buffer on success.
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }
}

/// NVML's text of return code `rc`.
fn error_text(error_string: ErrorString, rc: c_int) -> String {
    // SAFETY: nvmlErrorString returns a static NUL-terminated string (or null).
    let text = unsafe { error_string(rc) };
    if text.is_null() {
        format!("error {rc}")
    } else {
        // SAFETY: non-null and NUL-terminated (nvml.h).
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for Nvml {
    fn drop(&mut self) {
        // SAFETY: NVML was initialized by `open`; the library is still loaded.
        unsafe { (self.shutdown)() };
    }
}

fn missing(e: libloading::Error) -> String {
    format!("NVML: {NVML_LIBRARY} lacks a function this build calls ({e})")
}

/// The PCI bus id NVML takes ("domain:bus:device.function", hexadecimal).
pub fn pci_bus_id(domain: u32, bus: u32, device: u32) -> String {
    format!("{domain:08x}:{bus:02x}:{device:02x}.0")
}

/// The PCI bus id of the context's device.
fn bus_id_of(ctx: &CudaContext) -> Result<String, String> {
    let attr = |a: CUdevice_attribute| {
        ctx.attribute(a)
            .map(|v| v.max(0) as u32)
            .map_err(|e| format!("CUDA: reading the PCI address: {e:?}"))
    };
    Ok(pci_bus_id(
        attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID)?,
        attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID)?,
        attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID)?,
    ))
}

/// NVML's energy counter of one GPU.
struct NvmlMeter {
    nvml: Nvml,
    device: Device,
    label: String,
}

impl EnergyMeter for NvmlMeter {
    fn source(&self) -> String {
        self.label.clone()
    }

    fn joules(&mut self) -> Result<f64, String> {
        Ok(self.nvml.energy_mj(self.device)? as f64 / 1e3)
    }
}

/// The energy meter of the context's GPU, or why there is none (NVML missing, device not
/// found, counter unsupported).
pub fn meter(ctx: &CudaContext) -> Meter {
    let nvml = Nvml::open()?;
    let bus = bus_id_of(ctx)?;
    let device = nvml.device(&bus)?;
    nvml.energy_mj(device)?;
    let label = format!("nvml: total energy of GPU {bus} ({})", nvml.name(device));
    Ok(Box::new(NvmlMeter {
        nvml,
        device,
        label,
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn pci_bus_ids_are_nvml_formatted() {
        assert_eq!(super::pci_bus_id(0, 0x65, 0), "00000000:65:00.0");
        assert_eq!(super::pci_bus_id(1, 7, 0x1f), "00000001:07:1f.0");
    }

    #[test]
    fn without_nvml_the_reason_is_named() {
        match super::Nvml::open() {
            Ok(_) => {} // a machine with the NVIDIA driver
            Err(why) => {
                assert!(why.starts_with("NVML: "), "{why}");
                let r = crate::energy::measure_with(Err(why), || Ok(1)).unwrap();
                assert!(!r.measurable);
                assert!(
                    r.source.starts_with("not measurable here: NVML: "),
                    "{}",
                    r.source
                );
            }
        }
    }
}

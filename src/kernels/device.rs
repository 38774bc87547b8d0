//! `--device auto|cpu|cuda` -> the backend the kernel stage runs on, chosen before any work starts.

use std::fmt;
use std::str::FromStr;

use super::Backend;
use super::cpu::CpuBackend;
use super::cuda::{CudaBackend, CudaUnavailable};

/// The names `--device` takes.
pub const DEVICE_NAMES: [&str; 3] = ["auto", "cpu", "cuda"];

/// What `--device` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA where its driver, a device and NVRTC are present and the kernels load; else the CPU.
    #[default]
    Auto,
    Cpu,
    /// CUDA, or an error that names what is missing.
    Cuda,
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<DeviceChoice, String> {
        match text {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda),
            other => Err(format!("{other:?} is not auto, cpu or cuda")),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceChoice::Auto => "auto",
            DeviceChoice::Cpu => "cpu",
            DeviceChoice::Cuda => "cuda",
        })
    }
}

/// `--device cuda` where CUDA cannot start: a usage error, before any work.
#[derive(Debug, thiserror::Error)]
#[error("--device cuda")]
pub struct DeviceError(#[from] pub CudaUnavailable);

/// The device the kernels run on, once chosen. The rows written are the same on every device.
#[derive(Debug, Clone, Default)]
pub enum Device {
    #[default]
    Cpu,
    /// `--device auto` where CUDA cannot start, and why.
    CpuInstead(String),
    Cuda(CudaBackend),
}

impl Device {
    /// The device for `choice`. `Auto` falls back to the CPU with one info line saying why.
    pub fn select(choice: DeviceChoice) -> Result<Device, DeviceError> {
        let device = match choice {
            DeviceChoice::Cpu => Device::Cpu,
            DeviceChoice::Cuda => Device::Cuda(CudaBackend::get()?),
            DeviceChoice::Auto => match CudaBackend::get() {
                Ok(cuda) => Device::Cuda(cuda),
                Err(reason) => {
                    tracing::info!(%reason, "CUDA cannot start; kernels run on the CPU");
                    return Ok(Device::CpuInstead(reason.to_string()));
                }
            },
        };
        tracing::info!(kernels = %device.description(), "kernel backend chosen");
        Ok(device)
    }

    /// A backend for a kernel stage.
    pub fn backend(&self) -> Box<dyn Backend> {
        match self {
            Device::Cpu | Device::CpuInstead(_) => Box::new(CpuBackend),
            Device::Cuda(cuda) => Box::new(cuda.clone()),
        }
    }

    /// `cpu`, `cpu (no CUDA: REASON)` or `cuda (NVIDIA H200, sm_90)`.
    pub fn description(&self) -> String {
        match self {
            Device::CpuInstead(reason) => format!("cpu (no CUDA: {reason})"),
            _ => self.backend().description(),
        }
    }
}

//! Contents batch -> the CPU backend's columns, computed on a CUDA device: the kernels of
//! `kernels/*.cu`, compiled by NVRTC at run time (once per process) for the device's architecture.
//!
//! A launch splits the batch into chunks of rows and alternates them between two streams, so that
//! the copies of one chunk overlap the kernels of the other, while the worker hashes, detects
//! languages and matches rules on the CPU. The device returns integer byte counts, a NUL flag
//! and signatures; lines and entropy are derived from the counts on the host with the CPU
//! backend's own functions, so every column equals [`cpu::batch_columns`] bit for bit.

use std::sync::{Arc, OnceLock};

use arrow_array::{Array, BinaryArray};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr,
    DriverError, LaunchConfig, PinnedHostSlice, PushKernelArg, ValidAsZeroBits,
};
use cudarc::nvrtc::result as nvrtc;
use cudarc::nvrtc::{CompileError, CompileOptions, Ptx};

use super::cpu::{self, CpuKernels};
use super::{Backend, BatchColumns, MinHashJob, WorkerKernels, minhash};

/// A kernel source of `kernels/`, embedded in the binary.
#[derive(Debug, Clone, Copy)]
pub struct KernelSource {
    /// Its file name in `kernels/`.
    pub file: &'static str,
    pub text: &'static str,
    /// The `extern "C"` kernels it defines.
    pub kernels: &'static [&'static str],
}

/// The header every source includes; NVRTC is given it inlined.
pub const COMMON_HEADER: &str = include_str!("../../kernels/common.h");

const FEATURES: KernelSource = KernelSource {
    file: "features.cu",
    text: include_str!("../../kernels/features.cu"),
    kernels: &["exo_features"],
};

const MINHASH: KernelSource = KernelSource {
    file: "minhash.cu",
    text: include_str!("../../kernels/minhash.cu"),
    kernels: &["exo_minhash"],
};

/// Every kernel source the backend compiles.
pub const SOURCES: &[KernelSource] = &[FEATURES, MINHASH];

/// Threads per block of both kernels (`EXO_FEATURE_THREADS`, `EXO_MINHASH_THREADS`).
const BLOCK_THREADS: u32 = 256;
/// A chunk holds at most this many content bytes (unless one row is larger) ...
const CHUNK_BYTES: usize = 8 << 20;
/// ... and at most this many rows, whose byte counts take 1 KiB each.
const CHUNK_ROWS: usize = 4096;
/// The flags of a row (`EXO_ROW_VALID`, `EXO_ROW_SIGNATURE` in `kernels/common.h`).
const ROW_VALID: u8 = 1;
const ROW_SIGNATURE: u8 = 2;

/// Why the CUDA backend cannot run here.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CudaUnavailable {
    #[error("no CUDA driver library (libcuda.so.1) found")]
    NoDriver,
    #[error("no CUDA device found")]
    NoDevice,
    #[error("the CUDA driver failed to start: {0}")]
    Driver(DriverError),
    #[error("no NVRTC library (libnvrtc.so.12) found")]
    NoNvrtc,
    #[error("kernels/{file} does not compile for {arch}: {log}")]
    Compile {
        file: &'static str,
        arch: String,
        log: String,
    },
    #[error("the CUDA driver cannot load the kernels of kernels/{file}: {error}")]
    Load {
        file: &'static str,
        error: DriverError,
    },
}

/// Whether the NVRTC library can be loaded (compiling without it would panic inside cudarc).
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to open the library by its candidate names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Whether the CUDA driver library can be loaded.
pub fn driver_present() -> bool {
    // SAFETY: only tries to open the library by its candidate names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// The text NVRTC compiles: `source` with the shared header inlined where it is included, as
/// the preprocessor of a host compiler does from the file.
pub fn expanded(source: &KernelSource) -> String {
    source
        .text
        .replacen("#include \"common.h\"", COMMON_HEADER, 1)
}

/// Compiles one source with NVRTC: to PTX for a virtual architecture such as `compute_90`, or
/// to a CUBIN (machine code) for a real one such as `sm_90`. The backend compiles every source
/// of [`SOURCES`] to a CUBIN for its device when it starts: unlike PTX, which the driver compiles
/// again and refuses when NVRTC is newer than the driver, a CUBIN loads on any driver of the
/// same major CUDA version.
pub fn compile(source: &KernelSource, arch: &str) -> Result<Ptx, CudaUnavailable> {
    if !nvrtc_present() {
        return Err(CudaUnavailable::NoNvrtc);
    }
    if !arch.starts_with("sm_") {
        let options = vec![format!("--gpu-architecture={arch}"), "--std=c++14".into()];
        let failed = |log: String| CudaUnavailable::Compile {
            file: source.file,
            arch: arch.to_string(),
            log,
        };
        let options = CompileOptions {
            name: Some(source.file.to_string()),
            options,
            ..Default::default()
        };
        return cudarc::nvrtc::compile_ptx_with_opts(expanded(source), options).map_err(|error| {
            failed(match error {
                CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
                other => other.to_string(),
            })
        });
    }
    compile_cubin(source, arch).map(Ptx::from_binary)
}

/// [`compile`] for a real architecture (`sm_90`): the CUBIN, an ELF image.
pub fn compile_cubin(source: &KernelSource, arch: &str) -> Result<Vec<u8>, CudaUnavailable> {
    if !nvrtc_present() {
        return Err(CudaUnavailable::NoNvrtc);
    }
    let options = [format!("--gpu-architecture={arch}"), "--std=c++14".into()];
    let failed = |log: String| CudaUnavailable::Compile {
        file: source.file,
        arch: arch.to_string(),
        log,
    };
    let text = std::ffi::CString::new(expanded(source)).map_err(|e| failed(e.to_string()))?;
    let name = std::ffi::CString::new(source.file).map_err(|e| failed(e.to_string()))?;
    let program = nvrtc::create_program(&text, Some(&name)).map_err(|e| failed(e.to_string()))?;
    // SAFETY: `program` was created above from `text` and `name`, which outlive it, and is
    // destroyed once, at the end.
    unsafe {
        let compiled = match nvrtc::compile_program(program, &options) {
            Ok(()) => cubin_of(program).map_err(|e| failed(e.to_string())),
            Err(error) => Err(failed(match nvrtc::get_program_log(program) {
                Ok(log) => std::ffi::CStr::from_ptr(log.as_ptr())
                    .to_string_lossy()
                    .into_owned(),
                Err(_) => error.to_string(),
            })),
        };
        let _ = nvrtc::destroy_program(program);
        compiled
    }
}

/// The CUBIN of a compiled program.
///
/// # Safety
/// `program` is a live NVRTC program, compiled for a real architecture.
unsafe fn cubin_of(
    program: cudarc::nvrtc::sys::nvrtcProgram,
) -> Result<Vec<u8>, cudarc::nvrtc::result::NvrtcError> {
    use cudarc::nvrtc::sys;
    let mut size = 0usize;
    // SAFETY: as the caller promises; the buffer is as large as NVRTC says.
    unsafe {
        sys::nvrtcGetCUBINSize(program, &mut size).result()?;
        let mut cubin = vec![0u8; size];
        sys::nvrtcGetCUBIN(program, cubin.as_mut_ptr().cast()).result()?;
        Ok(cubin)
    }
}

/// The device, with the kernels loaded: started once per process.
#[derive(Debug)]
struct LoadedDevice {
    context: Arc<CudaContext>,
    features: CudaFunction,
    minhash: CudaFunction,
    description: String,
}

/// The CUDA backend: device 0, its kernels compiled and loaded once; each worker gets its own
/// streams and buffers.
#[derive(Debug, Clone)]
pub struct CudaBackend {
    device: Arc<LoadedDevice>,
}

impl CudaBackend {
    /// The backend of this process, started at the first call; the reason when CUDA cannot run.
    pub fn get() -> Result<CudaBackend, CudaUnavailable> {
        static STARTED: OnceLock<Result<CudaBackend, CudaUnavailable>> = OnceLock::new();
        STARTED
            .get_or_init(|| {
                start().map(|device| CudaBackend {
                    device: Arc::new(device),
                })
            })
            .clone()
    }

    /// The device's name and architecture, like `NVIDIA H200, sm_90`.
    pub fn device_description(&self) -> &str {
        &self.device.description
    }

    /// One worker's kernels: its own streams and buffers.
    pub fn kernels(&self) -> Result<CudaKernels, DriverError> {
        CudaKernels::new(self.device.clone())
    }
}

fn start() -> Result<LoadedDevice, CudaUnavailable> {
    if !driver_present() {
        return Err(CudaUnavailable::NoDriver);
    }
    let no_device = |e: DriverError| match e.0 {
        cudarc::driver::sys::CUresult::CUDA_ERROR_NO_DEVICE => CudaUnavailable::NoDevice,
        _ => CudaUnavailable::Driver(e),
    };
    if CudaContext::device_count().map_err(no_device)? < 1 {
        return Err(CudaUnavailable::NoDevice);
    }
    if !nvrtc_present() {
        return Err(CudaUnavailable::NoNvrtc);
    }
    let context = CudaContext::new(0).map_err(no_device)?;
    let (major, minor) = context
        .compute_capability()
        .map_err(CudaUnavailable::Driver)?;
    let name = context.name().map_err(CudaUnavailable::Driver)?;
    let arch = format!("sm_{major}{minor}");
    let load = |source: &KernelSource| -> Result<CudaFunction, CudaUnavailable> {
        let ptx = compile(source, &arch)?;
        let error = |error| CudaUnavailable::Load {
            file: source.file,
            error,
        };
        let module = context.load_module(ptx).map_err(error)?;
        module.load_function(source.kernels[0]).map_err(error)
    };
    let features = load(&FEATURES)?;
    let minhash = load(&MINHASH)?;
    Ok(LoadedDevice {
        features,
        minhash,
        description: format!("{}, sm_{major}{minor}", name.trim()),
        context,
    })
}

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn description(&self) -> String {
        format!("cuda ({})", self.device.description)
    }

    fn worker(&self) -> Box<dyn WorkerKernels> {
        match self.kernels() {
            Ok(kernels) => Box::new(kernels),
            Err(error) => {
                tracing::error!(%error, "cannot set up CUDA streams; this worker's kernels run on the CPU");
                Box::new(CpuKernels::default())
            }
        }
    }
}

/// One stream with the device buffers of the chunks it runs.
#[derive(Debug)]
struct Lane {
    stream: Arc<CudaStream>,
    values: CudaSlice<u8>,
    offsets: CudaSlice<i32>,
    flags: CudaSlice<u8>,
    histograms: CudaSlice<u32>,
    binary: CudaSlice<u8>,
    signatures: CudaSlice<u32>,
}

impl Lane {
    fn new(context: &Arc<CudaContext>) -> Result<Lane, DriverError> {
        let stream = context.new_stream()?;
        Ok(Lane {
            values: stream.alloc_zeros(1)?,
            offsets: stream.alloc_zeros(1)?,
            flags: stream.alloc_zeros(1)?,
            histograms: stream.alloc_zeros(1)?,
            binary: stream.alloc_zeros(1)?,
            signatures: stream.alloc_zeros(1)?,
            stream,
        })
    }
}

/// Makes `slot` hold at least `len` elements, growing it to the next power of two.
fn grow<T: DeviceRepr + ValidAsZeroBits>(
    stream: &Arc<CudaStream>,
    slot: &mut CudaSlice<T>,
    len: usize,
) -> Result<(), DriverError> {
    if slot.len() < len {
        *slot = stream.alloc_zeros(len.next_power_of_two())?;
    }
    Ok(())
}

/// Page-locked host memory of at least `len` elements; `flags` as for `cuMemHostAlloc`.
fn grow_pinned<T: DeviceRepr + ValidAsZeroBits>(
    context: &Arc<CudaContext>,
    slot: &mut Option<PinnedHostSlice<T>>,
    len: usize,
    flags: u32,
) -> Result<(), DriverError> {
    if slot.as_ref().is_none_or(|s| s.len() < len) {
        *slot = None;
        // SAFETY: the memory is written (by the host or by a copy) before it is read.
        *slot = Some(unsafe { context.alloc_pinned_with_flags(len.next_power_of_two(), flags) }?);
    }
    Ok(())
}

/// The page-locked staging memory of a worker: inputs (write-combined: the host only writes
/// them) and outputs (cached: the host reads them).
#[derive(Debug, Default)]
struct Staging {
    values: Option<PinnedHostSlice<u8>>,
    offsets: Option<PinnedHostSlice<i32>>,
    flags: Option<PinnedHostSlice<u8>>,
    histograms: Option<PinnedHostSlice<u32>>,
    binary: Option<PinnedHostSlice<u8>>,
    signatures: Option<PinnedHostSlice<u32>>,
}

/// A launch whose columns `wait` has yet to collect.
#[derive(Debug)]
struct Pending {
    /// The launch's contents (a clone shares their buffers): for the last byte of each row,
    /// and for the CPU, should the device fail.
    contents: BinaryArray,
    minhash: Option<MinHashJob>,
    /// Whether the device computed the columns; otherwise they are in `fallback`.
    on_device: bool,
    fallback: Option<BatchColumns>,
}

/// The CUDA kernels of one worker: two streams, their device buffers, and the pinned staging
/// memory, all grown as batches need and kept for the next.
#[derive(Debug)]
pub struct CudaKernels {
    device: Arc<LoadedDevice>,
    lanes: [Lane; 2],
    staging: Staging,
    pending: Option<Pending>,
    /// Set at the first device failure: the worker's later batches run on the CPU.
    failed: bool,
}

impl CudaKernels {
    fn new(device: Arc<LoadedDevice>) -> Result<CudaKernels, DriverError> {
        let lanes = [Lane::new(&device.context)?, Lane::new(&device.context)?];
        Ok(CudaKernels {
            device,
            lanes,
            staging: Staging::default(),
            pending: None,
            failed: false,
        })
    }

    /// Starts the kernels over `contents` on the device, returning once every copy and kernel
    /// is queued; [`CudaKernels::try_wait`] collects the columns.
    pub fn try_launch(
        &mut self,
        contents: &BinaryArray,
        minhash: Option<MinHashJob>,
    ) -> Result<(), DriverError> {
        self.pending = Some(Pending {
            contents: contents.clone(),
            minhash,
            on_device: true,
            fallback: None,
        });
        self.enqueue(contents, minhash)
    }

    /// The columns of the last [`CudaKernels::try_launch`], once the device has finished.
    pub fn try_wait(&mut self) -> Result<BatchColumns, DriverError> {
        let pending = self.pending.take().expect("wait follows a launch");
        self.collect(&pending)
    }

    fn enqueue(
        &mut self,
        contents: &BinaryArray,
        minhash: Option<MinHashJob>,
    ) -> Result<(), DriverError> {
        let rows = contents.len();
        if rows == 0 {
            return Ok(());
        }
        if let Some(job) = minhash {
            assert!(
                (1..=minhash::MAX_SHINGLE).contains(&job.shingle)
                    && (1..=minhash::MAX_SIGNATURE).contains(&job.k),
                "the pipeline validates the MinHash parameters"
            );
        }
        let context = self.device.context.clone();
        context.bind_to_thread()?;
        let offsets = contents.value_offsets();
        let first = offsets[0] as usize;
        let values = &contents.value_data()[first..offsets[rows] as usize];
        let k = minhash.map_or(0, |job| job.k);

        let staging = &mut self.staging;
        let write_combined = cudarc::driver::sys::CU_MEMHOSTALLOC_WRITECOMBINED;
        grow_pinned(
            &context,
            &mut staging.values,
            values.len().max(1),
            write_combined,
        )?;
        grow_pinned(&context, &mut staging.offsets, rows + 1, write_combined)?;
        grow_pinned(&context, &mut staging.flags, rows, write_combined)?;
        grow_pinned(&context, &mut staging.histograms, rows * 256, 0)?;
        grow_pinned(&context, &mut staging.binary, rows, 0)?;
        grow_pinned(&context, &mut staging.signatures, (rows * k).max(1), 0)?;
        let staged_values = staging.values.as_mut().unwrap().as_mut_slice()?;
        let staged_offsets = staging.offsets.as_mut().unwrap().as_mut_slice()?;
        let staged_flags = staging.flags.as_mut().unwrap().as_mut_slice()?;
        let out_histograms = staging.histograms.as_mut().unwrap().as_mut_slice()?;
        let out_binary = staging.binary.as_mut().unwrap().as_mut_slice()?;
        let out_signatures = staging.signatures.as_mut().unwrap().as_mut_slice()?;

        staged_offsets[..=rows].copy_from_slice(offsets);
        for (row, flag) in staged_flags[..rows].iter_mut().enumerate() {
            *flag = 0;
            if contents.is_valid(row) {
                *flag = ROW_VALID;
                if minhash.is_some_and(|job| contents.value_length(row) as u64 >= job.min_size) {
                    *flag |= ROW_SIGNATURE;
                }
            }
        }

        for (chunk, (r0, r1)) in chunks(offsets).enumerate() {
            let lane = &mut self.lanes[chunk % 2];
            let stream = lane.stream.clone();
            let n = r1 - r0;
            let (b0, b1) = (offsets[r0] as usize - first, offsets[r1] as usize - first);
            // Staged while the device works on the chunks before this one.
            staged_values[b0..b1].copy_from_slice(&values[b0..b1]);
            grow(&stream, &mut lane.values, (b1 - b0).max(1))?;
            grow(&stream, &mut lane.offsets, n + 1)?;
            grow(&stream, &mut lane.flags, n)?;
            grow(&stream, &mut lane.histograms, n * 256)?;
            grow(&stream, &mut lane.binary, n)?;
            if k > 0 {
                grow(&stream, &mut lane.signatures, n * k)?;
            }
            to_device(&stream, &staged_values[b0..b1], &mut lane.values)?;
            to_device(&stream, &staged_offsets[r0..=r1], &mut lane.offsets)?;
            to_device(&stream, &staged_flags[r0..r1], &mut lane.flags)?;

            let config = LaunchConfig {
                grid_dim: (n as u32, 1, 1),
                block_dim: (BLOCK_THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            let rows_u32 = n as u32;
            let mut launch = stream.launch_builder(&self.device.features);
            launch
                .arg(&lane.values)
                .arg(&lane.offsets)
                .arg(&lane.flags)
                .arg(&rows_u32)
                .arg(&mut lane.histograms)
                .arg(&mut lane.binary);
            // SAFETY: the arguments match `exo_features`; every buffer holds the chunk's rows.
            unsafe { launch.launch(config) }?;
            if let Some(job) = minhash {
                let (width, k32) = (job.shingle as u32, job.k as u32);
                let skip_binary = u32::from(job.skip_binary);
                let mut launch = stream.launch_builder(&self.device.minhash);
                launch
                    .arg(&lane.values)
                    .arg(&lane.offsets)
                    .arg(&lane.flags)
                    .arg(&lane.binary)
                    .arg(&rows_u32)
                    .arg(&width)
                    .arg(&k32)
                    .arg(&skip_binary)
                    .arg(&mut lane.signatures);
                // SAFETY: the arguments match `exo_minhash`; `signatures` holds n * k values.
                unsafe { launch.launch(config) }?;
                to_host(
                    &stream,
                    &lane.signatures,
                    &mut out_signatures[r0 * k..r1 * k],
                )?;
            }
            to_host(
                &stream,
                &lane.histograms,
                &mut out_histograms[r0 * 256..r1 * 256],
            )?;
            to_host(&stream, &lane.binary, &mut out_binary[r0..r1])?;
        }
        Ok(())
    }

    fn collect(&mut self, pending: &Pending) -> Result<BatchColumns, DriverError> {
        let contents = &pending.contents;
        let rows = contents.len();
        let mut columns = BatchColumns::with_capacity(rows);
        if rows == 0 {
            return Ok(columns);
        }
        self.device.context.bind_to_thread()?;
        for lane in &self.lanes {
            lane.stream.synchronize()?;
        }
        let histograms = self.staging.histograms.as_ref().unwrap().as_slice()?;
        let binary = self.staging.binary.as_ref().unwrap().as_slice()?;
        for row in 0..rows {
            let content = if contents.is_valid(row) {
                contents.value(row)
            } else {
                &[]
            };
            let mut histogram = [0u64; 256];
            for (count, &c) in histogram
                .iter_mut()
                .zip(&histograms[row * 256..(row + 1) * 256])
            {
                *count = u64::from(c);
            }
            columns
                .lines
                .push(cpu::lines_from_histogram(content, &histogram));
            columns
                .entropy
                .push(cpu::entropy(content.len(), &histogram));
            columns.is_binary.push(binary[row] != 0);
        }
        if let Some(job) = pending.minhash {
            let signatures = self.staging.signatures.as_ref().unwrap().as_slice()?;
            columns.signatures = signatures[..rows * job.k].to_vec();
        }
        Ok(columns)
    }
}

impl WorkerKernels for CudaKernels {
    fn launch(&mut self, contents: &BinaryArray, minhash: Option<MinHashJob>) {
        if !self.failed {
            match self.try_launch(contents, minhash) {
                Ok(()) => return,
                Err(error) => self.fail(error),
            }
        }
        self.pending = Some(Pending {
            contents: contents.clone(),
            minhash,
            on_device: false,
            fallback: Some(cpu::batch_columns(contents, minhash)),
        });
    }

    fn wait(&mut self) -> BatchColumns {
        let mut pending = self.pending.take().expect("wait follows a launch");
        if pending.on_device {
            match self.collect(&pending) {
                Ok(columns) => return columns,
                Err(error) => self.fail(error),
            }
        }
        pending
            .fallback
            .take()
            .unwrap_or_else(|| cpu::batch_columns(&pending.contents, pending.minhash))
    }
}

impl Drop for CudaKernels {
    /// The staging memory is freed only once no copy into or out of it can still be running.
    fn drop(&mut self) {
        for lane in &self.lanes {
            let _ = lane.stream.synchronize();
        }
    }
}

impl CudaKernels {
    /// A device failure: logged once, and this worker's batches run on the CPU from now on, with
    /// the same columns.
    fn fail(&mut self, error: DriverError) {
        if !self.failed {
            tracing::error!(%error, "CUDA kernels failed; this worker's kernels run on the CPU from now on");
        }
        self.failed = true;
    }
}

/// The chunks of a launch: row ranges of at most [`CHUNK_ROWS`] rows and (unless one row is
/// larger) [`CHUNK_BYTES`] content bytes.
fn chunks(offsets: &[i32]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let rows = offsets.len() - 1;
    let mut r0 = 0;
    std::iter::from_fn(move || {
        if r0 == rows {
            return None;
        }
        let mut r1 = r0 + 1;
        while r1 < rows
            && r1 - r0 < CHUNK_ROWS
            && (offsets[r1 + 1] - offsets[r0]) as usize <= CHUNK_BYTES
        {
            r1 += 1;
        }
        let chunk = (r0, r1);
        r0 = r1;
        Some(chunk)
    })
}

/// Queues a copy of `src` to the start of `dst` on `stream`.
fn to_device<T: DeviceRepr>(
    stream: &Arc<CudaStream>,
    src: &[T],
    dst: &mut CudaSlice<T>,
) -> Result<(), DriverError> {
    if src.is_empty() {
        return Ok(());
    }
    assert!(src.len() <= dst.len());
    let (ptr, _record) = dst.device_ptr_mut(stream);
    // SAFETY: `src` is page-locked staging memory that is not written again before the stream
    // is synchronized (at `wait`), and `dst` holds at least `src.len()` elements.
    unsafe { cudarc::driver::result::memcpy_htod_async(ptr, src, stream.cu_stream()) }
}

/// Queues a copy of the start of `src` into `dst` on `stream`.
fn to_host<T: DeviceRepr>(
    stream: &Arc<CudaStream>,
    src: &CudaSlice<T>,
    dst: &mut [T],
) -> Result<(), DriverError> {
    if dst.is_empty() {
        return Ok(());
    }
    assert!(dst.len() <= src.len());
    let (ptr, _record) = src.device_ptr(stream);
    // SAFETY: `dst` is page-locked staging memory that is not read before the stream is
    // synchronized (at `wait`), and `src` holds at least `dst.len()` elements.
    unsafe { cudarc::driver::result::memcpy_dtoh_async(dst, ptr, stream.cu_stream()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_row_once() {
        let offsets: Vec<i32> = [0, 0, 5, 5 + CHUNK_BYTES as i32, 6 + CHUNK_BYTES as i32]
            .into_iter()
            .collect();
        let got: Vec<_> = chunks(&offsets).collect();
        assert_eq!(got, vec![(0, 2), (2, 3), (3, 4)]);
        let many: Vec<i32> = (0..=(CHUNK_ROWS as i32 * 2 + 1)).collect();
        let got: Vec<_> = chunks(&many).collect();
        assert_eq!(
            got,
            vec![
                (0, CHUNK_ROWS),
                (CHUNK_ROWS, 2 * CHUNK_ROWS),
                (2 * CHUNK_ROWS, 2 * CHUNK_ROWS + 1)
            ]
        );
        // Sliced arrays start at a non-zero offset.
        let sliced = [100, 110, 120];
        assert_eq!(chunks(&sliced).collect::<Vec<_>>(), vec![(0, 2)]);
    }

    #[test]
    fn every_source_includes_the_header_once() {
        for source in SOURCES {
            assert_eq!(
                source.text.matches("#include").count(),
                1,
                "{}",
                source.file
            );
            let text = expanded(source);
            assert!(!text.contains("#include"));
            assert!(text.contains("EXOFLOW_COMMON_H"));
            for kernel in source.kernels {
                assert!(text.contains(&format!("void {kernel}(")), "{kernel}");
            }
        }
    }
}

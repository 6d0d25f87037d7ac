//! Applying nft scripts: a script is one atomic transaction (as upstream's knftables drives the
//! kernel), so a failed script changes nothing.
//!
//! Two ways to run one, same language, same transaction:
//! - **libnftables** (Debian's `libnftables1`, which `nft` itself links), loaded with `dlopen` at
//!   start so that nothing else in kplane needs it. One context, hence one netlink socket, lives as
//!   long as the proxy. This is what makes a small change cheap: each `nft` process pays its
//!   start-up, and on exit its socket's close waits for the kernel to free what the transaction
//!   deleted (`nft_rcv_nl_event` flushes the destroy work, an RCU grace period: 10–15 ms here).
//! - **the `nft` program** (`nft -f -`), when the library cannot be loaded, or when
//!   `KPLANE_NFT=process` asks for it (to compare the two).

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::PathBuf;
use std::process::Stdio;
use std::ptr::NonNull;
use std::sync::OnceLock;
use tokio::io::AsyncWriteExt;

/// Why a transaction was not applied.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("nft failed ({status}): {stderr}")]
    Failed { status: std::process::ExitStatus, stderr: String },
    #[error("libnftables failed: {0}")]
    Library(String),
}

/// How scripts are applied.
#[derive(Debug)]
pub struct Nft {
    program: PathBuf,
    /// The long-lived libnftables context, `None` while a transaction holds it (or without one).
    context: Option<Context>,
    /// Whether the library is in use (the context may be lent out to a blocking thread).
    library: bool,
}

impl Default for Nft {
    /// libnftables when it loads (and `KPLANE_NFT` is not `process`), else Debian's
    /// `/usr/sbin/nft` when present (root's PATH may lack `/usr/sbin`), else `nft` on PATH.
    /// The library's socket belongs to the calling thread's network namespace.
    fn default() -> Self {
        let mut me = Self::program_only();
        if std::env::var("KPLANE_NFT").as_deref() != Ok("process") {
            me.context = Context::new();
            me.library = me.context.is_some();
        }
        me
    }
}

/// At most this much of nft's error output goes into an error.
const MAX_STDERR: usize = 4096;

impl Nft {
    /// The `nft` program only, never the library.
    pub fn program_only() -> Self {
        let sbin = PathBuf::from("/usr/sbin/nft");
        Self { program: if sbin.exists() { sbin } else { PathBuf::from("nft") }, context: None, library: false }
    }

    /// Whether transactions go through the long-lived libnftables context.
    #[cfg(test)]
    pub fn uses_library(&self) -> bool {
        self.library
    }

    fn command(&self) -> std::process::Command {
        let mut c = std::process::Command::new(&self.program);
        c.args(["-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
        c
    }

    fn spawn_error(&self, source: std::io::Error) -> NftError {
        NftError::Spawn { program: self.program.display().to_string(), source }
    }

    /// Applies `script` as one transaction (the library's on a blocking thread: a full rebuild
    /// of a large table takes a while).
    pub async fn run(&mut self, script: &str) -> Result<(), NftError> {
        if self.library {
            let Some(context) = self.context.take() else {
                return Err(NftError::Library("the context was lost".into()));
            };
            let script = script.to_string();
            let joined = tokio::task::spawn_blocking(move || {
                let result = context.run(&script);
                (context, result)
            })
            .await;
            return match joined {
                Ok((context, result)) => {
                    self.context = Some(context);
                    result
                }
                Err(e) => {
                    // The context went with the thread: use the program from now on.
                    self.library = false;
                    Err(NftError::Library(format!("transaction thread failed: {e}")))
                }
            };
        }
        let mut child = tokio::process::Command::from(self.command())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| self.spawn_error(e))?;
        let mut stdin = child.stdin.take();
        // Written while nft runs, so a large script cannot wedge on a full pipe.
        let write = async {
            if let Some(stdin) = stdin.as_mut() {
                let _ = stdin.write_all(script.as_bytes()).await;
            }
            drop(stdin);
        };
        let ((), output) = tokio::join!(write, child.wait_with_output());
        check(output.map_err(|e| self.spawn_error(e))?)
    }

    /// [`Nft::run`] without a runtime (small scripts only: the table's removal on drop).
    pub fn run_blocking(&self, script: &str) -> Result<(), NftError> {
        if let Some(context) = &self.context {
            return context.run(script);
        }
        use std::io::Write;
        let mut child = self.command().spawn().map_err(|e| self.spawn_error(e))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(script.as_bytes());
        }
        check(child.wait_with_output().map_err(|e| self.spawn_error(e))?)
    }
}

fn check(output: std::process::Output) -> Result<(), NftError> {
    if output.status.success() {
        return Ok(());
    }
    let stderr = truncate(String::from_utf8_lossy(&output.stderr).trim().to_string());
    Err(NftError::Failed { status: output.status, stderr })
}

fn truncate(mut text: String) -> String {
    if text.len() > MAX_STDERR {
        let mut cut = MAX_STDERR;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str(" …");
    }
    text
}

// ---------------------------------------------------------------------------------------------
// libnftables, loaded at run time (its API: nftables' `include/nftables/libnftables.h`).

type CtxNew = unsafe extern "C" fn(flags: u32) -> *mut c_void;
type CtxFn = unsafe extern "C" fn(ctx: *mut c_void);
type CtxInt = unsafe extern "C" fn(ctx: *mut c_void) -> c_int;
type CtxStr = unsafe extern "C" fn(ctx: *mut c_void) -> *const c_char;
type RunCmd = unsafe extern "C" fn(ctx: *mut c_void, buf: *const c_char) -> c_int;

/// The library's functions used here.
struct Api {
    ctx_new: CtxNew,
    ctx_free: CtxFn,
    buffer_output: CtxInt,
    buffer_error: CtxInt,
    get_output_buffer: CtxStr,
    get_error_buffer: CtxStr,
    run_cmd_from_buffer: RunCmd,
}

/// `libnftables.so.1`, loaded once per process (never unloaded); `None` if it is missing or
/// lacks a function.
fn api() -> Option<&'static Api> {
    static API: OnceLock<Option<Api>> = OnceLock::new();
    API.get_or_init(|| {
        // SAFETY: dlopen with a constant NUL-terminated name; the handle is kept for the
        // process's life, so the symbols below stay valid.
        let handle = unsafe { libc::dlopen(c"libnftables.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return None;
        }
        let sym = |name: &CStr| {
            // SAFETY: a live handle and a NUL-terminated name.
            let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
            (!p.is_null()).then_some(p)
        };
        // SAFETY: each symbol is the libnftables function of that name, whose C signature (from
        // libnftables.h, stable since 0.9) is the function pointer type it is transmuted to.
        unsafe {
            Some(Api {
                ctx_new: std::mem::transmute::<*mut c_void, CtxNew>(sym(c"nft_ctx_new")?),
                ctx_free: std::mem::transmute::<*mut c_void, CtxFn>(sym(c"nft_ctx_free")?),
                buffer_output: std::mem::transmute::<*mut c_void, CtxInt>(sym(c"nft_ctx_buffer_output")?),
                buffer_error: std::mem::transmute::<*mut c_void, CtxInt>(sym(c"nft_ctx_buffer_error")?),
                get_output_buffer: std::mem::transmute::<*mut c_void, CtxStr>(sym(c"nft_ctx_get_output_buffer")?),
                get_error_buffer: std::mem::transmute::<*mut c_void, CtxStr>(sym(c"nft_ctx_get_error_buffer")?),
                run_cmd_from_buffer: std::mem::transmute::<*mut c_void, RunCmd>(sym(c"nft_run_cmd_from_buffer")?),
            })
        }
    })
    .as_ref()
}

/// One libnftables context (`struct nft_ctx`), with its output and errors buffered.
struct Context {
    api: &'static Api,
    ctx: NonNull<c_void>,
}

// SAFETY: a context is used by one thread at a time (it moves, it is never shared), which is
// all libnftables asks of its callers.
unsafe impl Send for Context {}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("libnftables context")
    }
}

impl Context {
    fn new() -> Option<Self> {
        let api = api()?;
        // SAFETY: NFT_CTX_DEFAULT (0); a null result means failure.
        let ctx = NonNull::new(unsafe { (api.ctx_new)(0) })?;
        let me = Self { api, ctx };
        // SAFETY: a live context.
        let buffered = unsafe { (api.buffer_output)(ctx.as_ptr()) == 0 && (api.buffer_error)(ctx.as_ptr()) == 0 };
        buffered.then_some(me)
    }

    fn run(&self, script: &str) -> Result<(), NftError> {
        let script = CString::new(script).map_err(|_| NftError::Library("a script with a NUL byte".into()))?;
        let ctx = self.ctx.as_ptr();
        // SAFETY: a live context used by this thread only, and a NUL-terminated script. The
        // buffers are read (which also empties them) before the next call.
        unsafe {
            let rc = (self.api.run_cmd_from_buffer)(ctx, script.as_ptr());
            let _ = (self.api.get_output_buffer)(ctx);
            let error = (self.api.get_error_buffer)(ctx);
            if rc == 0 {
                return Ok(());
            }
            let text = if error.is_null() { String::new() } else { CStr::from_ptr(error).to_string_lossy().into() };
            Err(NftError::Library(truncate(text.trim().to_string())))
        }
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: the context is live and dropped once.
        unsafe { (self.api.ctx_free)(self.ctx.as_ptr()) }
    }
}

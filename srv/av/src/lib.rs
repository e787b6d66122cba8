//! The service kinds that link FFmpeg's libraries, `encoder` and
//! `display` (the `mesh-video` crate), for the `mesh-av` binary.
//!
//! FFmpeg brings some 130 shared libraries, which the dynamic linker
//! loads before `main` in every process that links them: 60-70 ms and
//! 33 MB for `mesh --version`. So the `mesh` binary does not link this
//! crate. It runs every command itself, and hands `mesh up` and `mesh
//! demo` to `mesh-av` (by exec, same arguments) when the machines it
//! starts run one of these kinds (`srv::kinds::elsewhere`). `mesh-av` is
//! `mesh` with [`register`] called first.

use std::path::Path;
use std::sync::Arc;

use ns::deploy::{ServiceKind, ServiceSpec};
use ns::Router;
use srv::kinds::{plain, Built, CtlHook, FileFn, KindError};

/// Makes this process build the encoder and display kinds, and read back
/// the demo's recording.
pub fn register() {
    srv::kinds::register(build);
    srv::demo::register_probe(probe);
}

/// The kinds of this crate; `None` for the others.
fn build(spec: &ServiceSpec, _router: &Router) -> Option<Result<Built, KindError>> {
    let bad = |err| KindError::Bad { name: spec.name.to_string(), line: spec.line, err };
    match spec.kind {
        ServiceKind::Encoder => {
            let mut settings = mesh_video::EncoderSettings::default();
            settings.fps = spec.fps.unwrap_or(settings.fps);
            settings.bitrate = spec.bitrate.unwrap_or(settings.bitrate);
            let enc = mesh_video::EncoderService::new(settings);
            if let Err(e) = enc.set(settings) {
                return Some(Err(bad(anyhow::anyhow!(e))));
            }
            let e = enc.clone();
            // fps and bitrate apply from the next recording on.
            let ctl: CtlHook = Arc::new(move |_n, line| {
                let mut s = e.get();
                s.apply(line)?;
                e.set(s)
            });
            let e = enc.clone();
            let settings_file: FileFn = Arc::new(move || Ok(bytes::Bytes::from(e.get().to_string())));
            Some(Ok(Built { ctl: Some(ctl), files: vec![("settings".into(), settings_file)], ..plain(Arc::new(enc)) }))
        }
        ServiceKind::Display => {
            let out = spec.output.clone().unwrap_or_else(|| format!("out/{}.mp4", spec.name).into());
            let out = std::path::absolute(&out).unwrap_or(out);
            let disp = mesh_video::DisplayService::new(out.clone());
            let (d1, d2) = (disp.clone(), disp.clone());
            let png: FileFn =
                Arc::new(move || d1.latest_png().map(bytes::Bytes::from).ok_or_else(|| "no frame yet".to_string()));
            let status: FileFn = Arc::new(move || Ok(bytes::Bytes::from(d2.status())));
            Some(Ok(Built {
                about: Some(format!("output {}", out.display())),
                files: vec![("frame.png".into(), png), ("status".into(), status)],
                ..plain(Arc::new(disp))
            }))
        }
        _ => None,
    }
}

/// The recording's frames, duration and size, read back with FFmpeg's
/// demuxer.
fn probe(path: &Path) -> anyhow::Result<srv::demo::Video> {
    let v = mesh_video::probe(path)?;
    Ok(srv::demo::Video { frames: v.frames, seconds: v.seconds, width: v.width, height: v.height })
}

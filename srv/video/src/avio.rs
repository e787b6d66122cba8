//! FFmpeg I/O in memory: an MP4 muxer whose output lands in a byte vector,
//! and a demuxer that reads from a channel of chunks.
//!
//! FFmpeg's file I/O goes through an `AVIOContext`; a custom one with our
//! callbacks replaces files and pipes. ffmpeg-next wraps format contexts
//! only for files it opened itself (its `Output` drop would `avio_close` our
//! context, which frees its opaque pointer as a URL context), so the format
//! contexts here are handled through `ffmpeg_next::ffi` directly, each in a
//! small owner that frees everything on drop.

use std::ffi::{c_int, c_void};
use std::ptr;

use bytes::Bytes;
use ffmpeg::ffi;
use ffmpeg::packet::Mut as _;
use ffmpeg_next as ffmpeg;

use crate::Error;

/// Size of the AVIO buffers. The muxer's output is flushed after every
/// call anyway; this only bounds one callback's chunk.
const IO_BUFFER: usize = 64 << 10;

/// An `AVIOContext` with its buffer, freed on drop.
struct Avio(*mut ffi::AVIOContext);

impl Avio {
    /// # Safety
    /// `opaque` must stay valid, and fit the callbacks, for as long as the
    /// context is used.
    unsafe fn new(
        write: bool,
        opaque: *mut c_void,
        read_packet: Option<unsafe extern "C" fn(*mut c_void, *mut u8, c_int) -> c_int>,
        write_packet: Option<unsafe extern "C" fn(*mut c_void, *const u8, c_int) -> c_int>,
    ) -> Result<Avio, Error> {
        // SAFETY: av_malloc returns a buffer FFmpeg may reallocate or free,
        // which is why the context frees `(*ctx).buffer`, not this pointer.
        let buf = unsafe { ffi::av_malloc(IO_BUFFER) } as *mut u8;
        if buf.is_null() {
            return Err(Error::ffmpeg("av_malloc", ffmpeg::Error::Other { errno: ffmpeg::error::ENOMEM }));
        }
        // The write callback's buffer is `uint8_t *` before FFmpeg 6.1 and
        // `const uint8_t *` from then on; the constness of a pointer
        // argument does not change the C ABI, so the transmute only
        // satisfies whichever binding this build was generated from.
        // SAFETY: see above; both are `extern "C" fn(void *, uint8_t *, int) -> int`.
        #[allow(clippy::missing_transmute_annotations)]
        let write_packet = write_packet.map(|f| unsafe { std::mem::transmute(f) });
        // SAFETY: buf is a fresh av_malloc'd buffer of IO_BUFFER bytes;
        // no seek callback, so the context is non-seekable (what the
        // fragmented muxer and a streaming demuxer expect).
        let ctx = unsafe {
            ffi::avio_alloc_context(buf, IO_BUFFER as c_int, write as c_int, opaque, read_packet, write_packet, None)
        };
        if ctx.is_null() {
            // SAFETY: the buffer was not taken over.
            unsafe { ffi::av_free(buf as *mut c_void) };
            return Err(Error::ffmpeg("avio_alloc_context", ffmpeg::Error::Other { errno: ffmpeg::error::ENOMEM }));
        }
        Ok(Avio(ctx))
    }
}

impl Drop for Avio {
    fn drop(&mut self) {
        // SAFETY: we own the context; its buffer is FFmpeg's to free
        // through av_freep, and avio_context_free nulls our pointer.
        unsafe {
            if !self.0.is_null() {
                ffi::av_freep(&mut (*self.0).buffer as *mut *mut u8 as *mut c_void);
                ffi::avio_context_free(&mut self.0);
            }
        }
    }
}

fn check(what: &'static str, ret: c_int) -> Result<c_int, Error> {
    if ret < 0 {
        Err(Error::ffmpeg(what, ffmpeg::Error::from(ret)))
    } else {
        Ok(ret)
    }
}

/// Appends what the muxer writes to the `Vec<u8>` behind `opaque`.
unsafe extern "C" fn write_to_vec(opaque: *mut c_void, buf: *const u8, size: c_int) -> c_int {
    if size <= 0 || buf.is_null() {
        return 0;
    }
    // SAFETY: opaque is the Box<Vec<u8>> owned by the Muxer, alive while
    // its AVIOContext is; FFmpeg hands `size` readable bytes at `buf`.
    unsafe {
        let out = &mut *(opaque as *mut Vec<u8>);
        out.extend_from_slice(std::slice::from_raw_parts(buf, size as usize));
    }
    size
}

/// The MP4 muxer writing fragmented MP4 into memory.
pub(crate) struct Muxer {
    ctx: *mut ffi::AVFormatContext,
    /// Declared after `ctx`: dropped after the format context that uses it.
    avio: Avio,
    /// What the muxer wrote since the last [`Muxer::take`]. Boxed so its
    /// address, the callback's opaque pointer, never moves.
    #[allow(clippy::box_collection)]
    out: Box<Vec<u8>>,
    trailer_written: bool,
    /// A fragment was cut by hand: the next one may not follow on in time.
    cut: bool,
}

impl Muxer {
    /// Opens the muxer for one video stream described by the opened
    /// encoder `enc`, in time base `time_base`, and writes the header:
    /// the init segment (ftyp and moov) is then ready in [`Muxer::take`].
    ///
    /// `movflags`: `frag_keyframe` starts a fragment at each keyframe,
    /// `empty_moov` writes a moov without samples at once (so the output
    /// streams and any prefix of it plays), `default_base_moof` makes
    /// sample offsets relative to each moof, so fragments do not depend on
    /// their position in the file.
    pub(crate) fn new(enc: *const ffi::AVCodecContext, time_base: ffi::AVRational) -> Result<Muxer, Error> {
        let mut out: Box<Vec<u8>> = Box::default();
        let opaque = &mut *out as *mut Vec<u8> as *mut c_void;
        // SAFETY: opaque points into `out`, which the Muxer keeps alive
        // (and in place) as long as the context.
        let avio = unsafe { Avio::new(true, opaque, None, Some(write_to_vec))? };
        let mut ctx = ptr::null_mut();
        // SAFETY: plain allocation; the format name is a C string literal.
        check("avformat_alloc_output_context2", unsafe {
            ffi::avformat_alloc_output_context2(&mut ctx, ptr::null(), c"mp4".as_ptr(), ptr::null())
        })?;
        if ctx.is_null() {
            return Err(Error::ffmpeg("avformat_alloc_output_context2", ffmpeg::Error::MuxerNotFound));
        }
        let mut m = Muxer { ctx, avio, out, trailer_written: false, cut: false };
        // SAFETY: m.ctx is a valid output context we own; the stream is
        // owned by it. The custom-IO flag tells FFmpeg the pb is ours.
        unsafe {
            (*m.ctx).pb = m.avio.0;
            (*m.ctx).flags |= ffi::AVFMT_FLAG_CUSTOM_IO;
            let st = ffi::avformat_new_stream(m.ctx, ptr::null());
            if st.is_null() {
                return Err(Error::ffmpeg(
                    "avformat_new_stream",
                    ffmpeg::Error::Other { errno: ffmpeg::error::ENOMEM },
                ));
            }
            check("avcodec_parameters_from_context", ffi::avcodec_parameters_from_context((*st).codecpar, enc))?;
            (*st).time_base = time_base;
            let mut opts: *mut ffi::AVDictionary = ptr::null_mut();
            ffi::av_dict_set(
                &mut opts,
                c"movflags".as_ptr(),
                c"frag_keyframe+empty_moov+default_base_moof".as_ptr(),
                0,
            );
            let ret = ffi::avformat_write_header(m.ctx, &mut opts);
            ffi::av_dict_free(&mut opts);
            check("avformat_write_header", ret)?;
        }
        m.flush();
        Ok(m)
    }

    /// The stream's time base, as the muxer settled it.
    pub(crate) fn time_base(&self) -> ffmpeg::Rational {
        // SAFETY: the context has exactly one stream once `new` succeeded.
        unsafe { (**(*self.ctx).streams).time_base.into() }
    }

    /// Writes one packet (timestamps in the stream's time base).
    pub(crate) fn write(&mut self, pkt: &mut ffmpeg::Packet) -> Result<(), Error> {
        if std::mem::take(&mut self.cut) {
            // The muxer makes each fragment start where the previous one's
            // last sample ended, by its duration: after a cut that was the
            // nominal frame time, and a pause would vanish. A discontinuous
            // fragment starts at its own time instead (tfdt = the packet's
            // dts), so the pause stays in the video.
            // SAFETY: priv_data of an mp4 muxer is its options-bearing
            // context; "+frag_discont" adds the flag to movflags.
            check("av_opt_set(movflags)", unsafe {
                ffi::av_opt_set((*self.ctx).priv_data, c"movflags".as_ptr(), c"+frag_discont".as_ptr(), 0)
            })?;
        }
        // SAFETY: a valid context and packet; av_write_frame does not take
        // the packet's reference, it stays ours.
        check("av_write_frame", unsafe { ffi::av_write_frame(self.ctx, pkt.as_mut_ptr()) })?;
        self.flush();
        Ok(())
    }

    /// Ends the current fragment now: its samples go out.
    pub(crate) fn cut(&mut self) -> Result<(), Error> {
        // SAFETY: a null packet asks a muxer with AVFMT_ALLOW_FLUSH (mov
        // has it) to flush; for fragmented MP4 that writes the fragment.
        check("av_write_frame(flush)", unsafe { ffi::av_write_frame(self.ctx, ptr::null_mut()) })?;
        self.cut = true;
        self.flush();
        Ok(())
    }

    /// Writes the last fragment and the index at the end (mfra).
    pub(crate) fn finish(&mut self) -> Result<(), Error> {
        if self.trailer_written {
            return Ok(());
        }
        self.trailer_written = true;
        // SAFETY: header written in `new`; the trailer is written once.
        check("av_write_trailer", unsafe { ffi::av_write_trailer(self.ctx) })?;
        self.flush();
        Ok(())
    }

    /// Takes what was written so far.
    pub(crate) fn take(&mut self) -> Option<Bytes> {
        if self.out.is_empty() {
            None
        } else {
            Some(Bytes::from(std::mem::take(&mut *self.out)))
        }
    }

    fn flush(&mut self) {
        // SAFETY: pushes the AVIO buffer through write_to_vec into `out`.
        unsafe { ffi::avio_flush(self.avio.0) };
    }
}

impl Drop for Muxer {
    fn drop(&mut self) {
        // SAFETY: we own ctx; avformat_free_context frees the streams and
        // the muxer's state (pending fragment buffers too) but, with
        // custom IO, not the pb, which `self.avio` frees after this.
        unsafe {
            if !self.ctx.is_null() {
                (*self.ctx).pb = ptr::null_mut();
                ffi::avformat_free_context(self.ctx);
                self.ctx = ptr::null_mut();
            }
        }
    }
}

/// Where the demuxer's read callback takes bytes from.
struct Source {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    cur: Bytes,
}

/// Fills `buf` from the channel, blocking while it is empty; end of the
/// channel is end of file.
unsafe extern "C" fn read_from_channel(opaque: *mut c_void, buf: *mut u8, size: c_int) -> c_int {
    // SAFETY: opaque is the Box<Source> owned by the Demuxer, alive while
    // its AVIOContext is, and used by this one thread only.
    let src = unsafe { &mut *(opaque as *mut Source) };
    while src.cur.is_empty() {
        match src.rx.blocking_recv() {
            Some(b) => src.cur = b,
            None => return ffi::AVERROR_EOF,
        }
    }
    let n = src.cur.len().min(size.max(0) as usize);
    // SAFETY: FFmpeg hands `size` writable bytes at `buf`; n <= size.
    unsafe { ptr::copy_nonoverlapping(src.cur.as_ptr(), buf, n) };
    let _ = src.cur.split_to(n);
    n as c_int
}

/// The first video stream of an MP4 being demuxed.
pub(crate) struct VideoStream {
    pub index: usize,
    pub codec: ffmpeg::codec::Id,
    pub width: u32,
    pub height: u32,
    /// The decoder configuration (avcC for H.264).
    pub extradata: Vec<u8>,
}

/// The MP4 demuxer reading a stream of chunks as they arrive. Blocks in
/// its calls while the channel is empty: run it on its own thread.
pub(crate) struct Demuxer {
    ctx: *mut ffi::AVFormatContext,
    _avio: Avio,
    _src: Box<Source>,
}

impl Demuxer {
    /// Reads the header (through the first fragment's moof) from `rx`.
    pub(crate) fn open(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Result<Demuxer, Error> {
        let mut src = Box::new(Source { rx, cur: Bytes::new() });
        let opaque = &mut *src as *mut Source as *mut c_void;
        // SAFETY: opaque points into `src`, kept alive and in place by the
        // Demuxer for as long as the context.
        let avio = unsafe { Avio::new(false, opaque, Some(read_from_channel), None)? };
        // SAFETY: plain allocation.
        let mut ctx = unsafe { ffi::avformat_alloc_context() };
        if ctx.is_null() {
            return Err(Error::ffmpeg("avformat_alloc_context", ffmpeg::Error::Other { errno: ffmpeg::error::ENOMEM }));
        }
        // SAFETY: ctx is fresh; with pb set avformat_open_input marks the
        // IO as custom and never closes it. On failure it frees ctx (and
        // nulls it), leaving pb to us. The format is named, not probed:
        // probing would read ahead and ask for a seekable stream.
        unsafe {
            (*ctx).pb = avio.0;
            let fmt = ffi::av_find_input_format(c"mp4".as_ptr());
            check("avformat_open_input", ffi::avformat_open_input(&mut ctx, ptr::null(), fmt as _, ptr::null_mut()))?;
        }
        Ok(Demuxer { ctx, _avio: avio, _src: src })
    }

    /// The first video stream. No `avformat_find_stream_info`: it would
    /// wait for frames; the moov has all a decoder needs.
    pub(crate) fn video(&self) -> Option<VideoStream> {
        // SAFETY: streams[0..nb_streams] are valid while ctx is.
        unsafe {
            for i in 0..(*self.ctx).nb_streams as usize {
                let st = *(*self.ctx).streams.add(i);
                let par = (*st).codecpar;
                if (*par).codec_type != ffi::AVMediaType::AVMEDIA_TYPE_VIDEO {
                    continue;
                }
                let extradata = if (*par).extradata.is_null() || (*par).extradata_size <= 0 {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts((*par).extradata, (*par).extradata_size as usize).to_vec()
                };
                return Some(VideoStream {
                    index: i,
                    codec: (*par).codec_id.into(),
                    width: (*par).width.max(0) as u32,
                    height: (*par).height.max(0) as u32,
                    extradata,
                });
            }
        }
        None
    }

    /// The next packet; `Ok(false)` at end of stream.
    pub(crate) fn read(&mut self, pkt: &mut ffmpeg::Packet) -> Result<bool, Error> {
        // SAFETY: valid context and packet; av_read_frame unrefs nothing of
        // ours and fills pkt with a new reference (freed by Packet's drop
        // or the next read, which unrefs first).
        let ret = unsafe {
            ffi::av_packet_unref(pkt.as_mut_ptr());
            ffi::av_read_frame(self.ctx, pkt.as_mut_ptr())
        };
        if ret == ffi::AVERROR_EOF {
            return Ok(false);
        }
        check("av_read_frame", ret)?;
        Ok(true)
    }
}

impl Drop for Demuxer {
    fn drop(&mut self) {
        // SAFETY: we own ctx; avformat_close_input leaves a custom pb alone
        // (our Avio frees it after this) and nulls ctx.
        unsafe { ffi::avformat_close_input(&mut self.ctx) };
    }
}

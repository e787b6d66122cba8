//! [`Encoder`]: RGBA frames to H.264 in fragmented MP4, in memory.
//!
//! swscale turns RGBA into YUV 4:2:0 (BT.601 matrix, limited range, the
//! tags written into the stream say so), libx264 encodes, the MP4 muxer
//! cuts fragments. Everything here runs on the caller's thread and none of
//! it is `Send`: [`crate::EncoderService`] keeps one per conversation on a
//! thread of its own.

use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ffmpeg::codec::{self, threading};
use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg::util::frame;
use ffmpeg::{ffi, Rational};
use ffmpeg_next as ffmpeg;
use mesh_frame::Frame;

use crate::avio::Muxer;
use crate::Error;

/// Ticks per second of the encoder's time base. 90 kHz is the usual video
/// clock: exact for common frame rates, and fine enough (11 µs) that frame
/// times in microseconds keep their spacing.
pub const TIMESCALE: i32 = 90_000;

/// Keyframe interval: this many seconds of frames at the nominal rate
/// (`fps` × 2 frames). Counted in frames, not time: what a keyframe bounds
/// is decoding work (a seek, or the display's picture, decodes from the
/// last keyframe), which is per frame, so a terminal resting for minutes
/// costs no extra keyframe (a whole screen) when it wakes. Fragments start
/// at keyframes, and more often (see [`Encoder::cut`]).
pub const KEYFRAME_SECONDS: u32 = 2;

/// x264 speed preset. `veryfast` measured 2.2 to 3 ms a frame at 640x384
/// on one core of the 2-core development machine; `ultrafast` 1.4 to 1.6
/// ms, with files about 40% larger. See the crate doc.
const PRESET: &str = "veryfast";

/// Constant quality below the bitrate ceiling. 23 is x264's default; text
/// stays legible at terminal sizes.
const CRF: &str = "23";

/// Encoder threads. One: the pipeline's other stages (parser, renderer,
/// display) need the second core, and one core encodes a terminal at
/// 30 frames a second several times over.
const THREADS: usize = 1;

/// Largest width or height accepted.
pub const MAX_SIDE: u32 = 8192;

/// What the encoder is told: nominal frame rate and bitrate ceiling.
///
/// Frames carry their own times, so `fps` does not set when frames are
/// shown; it sets the keyframe interval (in frames) and the frame rate the
/// rate control budgets for. `bitrate` (bits per second) is a ceiling
/// (x264's VBV with a one-second buffer) over constant-quality encoding,
/// not a target: a quiet terminal costs next to nothing instead of being
/// padded up to the bitrate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncoderSettings {
    pub fps: u32,
    pub bitrate: u32,
}

impl Default for EncoderSettings {
    fn default() -> Self {
        EncoderSettings { fps: 30, bitrate: 1_000_000 }
    }
}

impl EncoderSettings {
    pub const FPS_RANGE: std::ops::RangeInclusive<u32> = 1..=240;
    pub const BITRATE_RANGE: std::ops::RangeInclusive<u32> = 10_000..=100_000_000;

    /// Checks both values are in range.
    pub fn validate(&self) -> Result<(), String> {
        if !Self::FPS_RANGE.contains(&self.fps) {
            return Err(format!("fps {} out of range {:?}", self.fps, Self::FPS_RANGE));
        }
        if !Self::BITRATE_RANGE.contains(&self.bitrate) {
            return Err(format!("bitrate {} out of range {:?}", self.bitrate, Self::BITRATE_RANGE));
        }
        Ok(())
    }

    /// Applies one ctl line, `fps N` or `bitrate N`; on error nothing
    /// changes.
    pub fn apply(&mut self, line: &str) -> Result<(), String> {
        let mut words = line.split_whitespace();
        let (Some(key), Some(value), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!("expected `fps N` or `bitrate N`, got {line:?}"));
        };
        let n: u32 = value.parse().map_err(|_| format!("{key}: not a number: {value:?}"))?;
        let mut new = *self;
        match key {
            "fps" => new.fps = n,
            "bitrate" => new.bitrate = n,
            _ => return Err(format!("unknown setting {key:?}")),
        }
        new.validate()?;
        *self = new;
        Ok(())
    }
}

/// `fps 30\nbitrate 1000000\n`: what the ctl file reads back, in the form
/// [`EncoderSettings::apply`] takes.
impl fmt::Display for EncoderSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "fps {}", self.fps)?;
        writeln!(f, "bitrate {}", self.bitrate)
    }
}

/// Frames in, MP4 bytes out.
///
/// The first frame fixes the video's size (its width and height rounded
/// down to even numbers, as 4:2:0 needs) and brings out the init segment
/// (ftyp and moov). Later frames come out in fragments (moof and mdat):
/// one starts at each keyframe, and [`Encoder::cut`] ends one early. A
/// frame of another size is scaled to the first size: one stream keeps one
/// init segment, so the whole recording stays one playable file.
///
/// Times: a frame's `pts_us`, less the first frame's, becomes its
/// presentation time, so gaps between frames stay gaps in the video. A
/// time that does not move forward is moved one tick past the previous
/// frame, since H.264 in MP4 needs increasing times. The session's end,
/// given to [`Encoder::hold_until`], holds the last picture until then.
pub struct Encoder {
    settings: EncoderSettings,
    run: Option<Run>,
    frames: u64,
    busy: Duration,
}

/// One stream being encoded.
struct Run {
    enc: ffmpeg::encoder::video::Encoder,
    mux: Muxer,
    width: u32,
    height: u32,
    stream_tb: Rational,
    scaler: Option<Scaler>,
    yuv: frame::Video,
    pkt: ffmpeg::Packet,
    first_us: u64,
    last_pts: Option<i64>,
    /// Packets muxed since the last cut: a fragment is open.
    pending: bool,
    warned_resize: bool,
}

/// Converts frames of one source size.
struct Scaler {
    width: u32,
    height: u32,
    ctx: scaling::Context,
    src: frame::Video,
}

impl Encoder {
    pub fn new(settings: EncoderSettings) -> Result<Encoder, Error> {
        settings.validate().map_err(Error::Settings)?;
        crate::init();
        // Fail now, not at the first frame, on a system without libx264.
        ffmpeg::encoder::find_by_name("libx264").ok_or(Error::NoCodec("libx264 encoder"))?;
        Ok(Encoder { settings, run: None, frames: 0, busy: Duration::ZERO })
    }

    pub fn settings(&self) -> EncoderSettings {
        self.settings
    }

    /// The encoded size, once the first frame set it.
    pub fn size(&self) -> Option<(u32, u32)> {
        self.run.as_ref().map(|r| (r.width, r.height))
    }

    /// Frames encoded so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Time spent in [`Encoder::encode`], all frames together.
    pub fn busy(&self) -> Duration {
        self.busy
    }

    /// Whether a fragment is open: frames went in that have not come out.
    pub fn pending(&self) -> bool {
        self.run.as_ref().is_some_and(|r| r.pending)
    }

    /// Encodes one frame; returns the bytes ready to go out, if any: the
    /// init segment after the first frame, then whole fragments.
    pub fn encode(&mut self, frame: &Frame) -> Result<Option<Bytes>, Error> {
        frame.validate().map_err(|e| Error::BadFrame(e.0))?;
        if frame.width < 2 || frame.height < 2 || frame.width > MAX_SIDE || frame.height > MAX_SIDE {
            return Err(Error::BadFrame(format!(
                "{}x{} frame: sides must be 2..={MAX_SIDE}",
                frame.width, frame.height
            )));
        }
        let t0 = Instant::now();
        if self.run.is_none() {
            self.run = Some(Run::start(self.settings, frame)?);
        }
        let Some(run) = self.run.as_mut() else { unreachable!("started above") };
        run.push(frame, self.settings)?;
        self.frames += 1;
        self.busy += t0.elapsed();
        Ok(run.mux.take())
    }

    /// Ends the open fragment now, so its frames go out without waiting
    /// for the next keyframe.
    pub fn cut(&mut self) -> Result<Option<Bytes>, Error> {
        let Some(run) = self.run.as_mut().filter(|r| r.pending) else { return Ok(None) };
        run.mux.cut()?;
        run.pending = false;
        Ok(run.mux.take())
    }

    /// The session ended at `end_us`, on the frames' clock: the last frame
    /// is shown until then, so the video lasts as long as the session.
    /// Returns the bytes ready to go out, if any.
    ///
    /// The last frame may already be out, in a fragment whose samples'
    /// durations are written, so it cannot be lengthened: its picture is
    /// encoded once more (an unchanged picture costs a few bytes) to start
    /// one nominal frame time before `end_us`, and so end at it. Nothing is
    /// added when the last frame's own nominal time reaches `end_us`, or
    /// before the first frame.
    pub fn hold_until(&mut self, end_us: u64) -> Result<Option<Bytes>, Error> {
        let Some(run) = self.run.as_mut() else { return Ok(None) };
        let t0 = Instant::now();
        run.hold_until(end_us, self.settings)?;
        self.busy += t0.elapsed();
        Ok(run.mux.take())
    }

    /// Ends the stream: what the encoder holds, the last fragment and the
    /// index (mfra). A frame after this starts a new stream, init segment
    /// and all.
    pub fn finish(&mut self) -> Result<Option<Bytes>, Error> {
        let Some(mut run) = self.run.take() else { return Ok(None) };
        run.enc.send_eof().map_err(|e| Error::ffmpeg("avcodec_send_frame(eof)", e))?;
        run.drain(self.settings)?;
        run.mux.finish()?;
        Ok(run.mux.take())
    }
}

impl Run {
    fn start(s: EncoderSettings, first: &Frame) -> Result<Run, Error> {
        let (width, height) = (first.width & !1, first.height & !1);
        let codec = ffmpeg::encoder::find_by_name("libx264").ok_or(Error::NoCodec("libx264 encoder"))?;
        let ctx = codec::context::Context::new_with_codec(codec);
        let mut v = ctx.encoder().video().map_err(|e| Error::ffmpeg("libx264 context", e))?;
        v.set_width(width);
        v.set_height(height);
        v.set_format(Pixel::YUV420P);
        v.set_time_base(Rational::new(1, TIMESCALE));
        v.set_frame_rate(Some(Rational::new(s.fps as i32, 1)));
        v.set_gop(s.fps.saturating_mul(KEYFRAME_SECONDS));
        v.set_max_b_frames(0);
        // What swscale's default conversion does, so players undo it right.
        v.set_colorspace(ffmpeg::color::Space::SMPTE170M);
        v.set_color_range(ffmpeg::color::Range::MPEG);
        // MP4 keeps SPS and PPS in the moov (avcC), not in the stream.
        v.set_flags(codec::Flags::GLOBAL_HEADER);
        v.set_threading(threading::Config { kind: threading::Type::Slice, count: THREADS, ..Default::default() });
        v.set_max_bit_rate(s.bitrate as usize);
        // SAFETY: a field of the context we own, before it is opened; the
        // buffer size makes the ceiling hold over any one second.
        unsafe { (*v.as_mut_ptr()).rc_buffer_size = s.bitrate.min(i32::MAX as u32) as i32 };
        let mut opts = ffmpeg::Dictionary::new();
        opts.set("preset", PRESET);
        // No lookahead and no frame delay: each frame comes out of the
        // encoder when it goes in.
        opts.set("tune", "zerolatency");
        opts.set("crf", CRF);
        let enc = v.open_with(opts).map_err(|e| Error::ffmpeg("opening libx264", e))?;
        // SAFETY: enc's context is open and outlives this call.
        let mux = Muxer::new(unsafe { enc.as_ptr() }, ffi::AVRational { num: 1, den: TIMESCALE })?;
        let stream_tb = mux.time_base();
        Ok(Run {
            enc,
            mux,
            width,
            height,
            stream_tb,
            scaler: None,
            yuv: frame::Video::new(Pixel::YUV420P, width, height),
            pkt: ffmpeg::Packet::empty(),
            first_us: first.pts_us,
            last_pts: None,
            pending: false,
            warned_resize: false,
        })
    }

    fn push(&mut self, f: &Frame, s: EncoderSettings) -> Result<(), Error> {
        let (sw, sh) = (f.width & !1, f.height & !1);
        if (sw, sh) != (self.width, self.height) && !self.warned_resize {
            self.warned_resize = true;
            tracing::info!(from = ?(f.width, f.height), to = ?(self.width, self.height), "encoder: frame size changed; scaling to the stream's size");
        }
        let scaler = match self.scaler.take() {
            Some(sc) if (sc.width, sc.height) == (sw, sh) => sc,
            _ => Scaler {
                width: sw,
                height: sh,
                // Bilinear: smooth enough when sizes differ; at equal
                // sizes only the chroma averaging uses it.
                ctx: scaling::Context::get(
                    Pixel::RGBA,
                    sw,
                    sh,
                    Pixel::YUV420P,
                    self.width,
                    self.height,
                    scaling::Flags::BILINEAR,
                )
                .map_err(|e| Error::ffmpeg("sws_getContext", e))?,
                src: frame::Video::new(Pixel::RGBA, sw, sh),
            },
        };
        let sc = self.scaler.insert(scaler);
        // Rows into the aligned source frame; an odd last column or row is
        // cropped here (a terminal's edge is background).
        let stride = sc.src.stride(0);
        let row = sw as usize * 4;
        let src_row = f.width as usize * 4;
        let dst = sc.src.data_mut(0);
        for y in 0..sh as usize {
            dst[y * stride..y * stride + row].copy_from_slice(&f.rgba[y * src_row..y * src_row + row]);
        }
        // SAFETY: the encoder may still hold a reference to the last
        // frame's buffers; this gives us unshared ones to write into.
        let ret = unsafe { ffi::av_frame_make_writable(self.yuv.as_mut_ptr()) };
        if ret < 0 {
            return Err(Error::ffmpeg("av_frame_make_writable", ret.into()));
        }
        sc.ctx.run(&sc.src, &mut self.yuv).map_err(|e| Error::ffmpeg("sws_scale", e))?;

        let pts = self.ticks(f.pts_us);
        self.send(pts, s)
    }

    /// Encodes the last picture again so that it ends at `end_us` (see
    /// [`Encoder::hold_until`]).
    fn hold_until(&mut self, end_us: u64, s: EncoderSettings) -> Result<(), Error> {
        let Some(last) = self.last_pts else { return Ok(()) };
        let nominal = nominal(s);
        let end = self.ticks(end_us);
        if end <= last + nominal {
            return Ok(());
        }
        // `yuv` still holds the last picture: the encoder took its own
        // reference to the buffers, and nothing wrote to them since.
        self.send(end - nominal, s)
    }

    /// A time on the frames' clock in ticks from the first frame, rounded
    /// to the nearest tick: 1/30 s stays 3000 ticks, not 2999.
    fn ticks(&self, us: u64) -> i64 {
        let rel = us.saturating_sub(self.first_us);
        i64::try_from((rel as u128 * TIMESCALE as u128 + 500_000) / 1_000_000).unwrap_or(i64::MAX / 2)
    }

    /// Encodes the picture in `yuv` at `pts`, or just after the last frame.
    fn send(&mut self, mut pts: i64, s: EncoderSettings) -> Result<(), Error> {
        if let Some(last) = self.last_pts {
            pts = pts.max(last + 1);
            // A sample's duration is 32 bits in MP4 (6.6 hours at 90 kHz);
            // a longer rest inside one fragment would not fit, while a new
            // fragment says its start time in 64 bits.
            if self.pending && pts - last >= i32::MAX as i64 {
                self.mux.cut()?;
                self.pending = false;
            }
        }
        self.last_pts = Some(pts);
        self.yuv.set_pts(Some(pts));
        self.enc.send_frame(&self.yuv).map_err(|e| Error::ffmpeg("avcodec_send_frame", e))?;
        self.drain(s)
    }

    /// Moves the encoder's packets into the muxer.
    fn drain(&mut self, s: EncoderSettings) -> Result<(), Error> {
        // The last frame's duration: unknown until the next frame, so the
        // nominal one; the muxer uses it only for a fragment's last sample.
        let nominal = nominal(s);
        loop {
            match self.enc.receive_packet(&mut self.pkt) {
                Ok(()) => {}
                Err(ffmpeg::Error::Other { errno: ffmpeg::error::EAGAIN }) | Err(ffmpeg::Error::Eof) => return Ok(()),
                Err(e) => return Err(Error::ffmpeg("avcodec_receive_packet", e)),
            }
            self.pkt.set_stream(0);
            self.pkt.set_duration(nominal);
            self.pkt.rescale_ts(Rational::new(1, TIMESCALE), self.stream_tb);
            self.mux.write(&mut self.pkt)?;
            self.pending = true;
        }
    }
}

/// One frame's time at the nominal rate, in ticks.
fn nominal(s: EncoderSettings) -> i64 {
    (TIMESCALE as u32 / s.fps.max(1)).max(1) as i64
}

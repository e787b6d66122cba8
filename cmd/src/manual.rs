//! mesh(1), generated from the clap definition ([`crate::cli`]) with
//! clap_mangen, followed by the hand-written sections of
//! `src/manual/mesh.1.tail` (EXAMPLES, ENVIRONMENT, FILES, SEE ALSO).
//!
//! One page covers every subcommand: a SYNOPSIS line each, then a
//! COMMANDS section with each one's description and options. clap_mangen
//! renders the title, name, descriptions and option lists; the synopsis
//! lines are made here because clap_mangen leaves out the values options
//! take (`[-m|--machine]` rather than `[-m ID]...`).
//!
//! The page is committed as man/mesh.1 and `mesh manual --out man/`
//! rewrites it; a test fails while the committed page differs from
//! [`render`], so a changed or added subcommand cannot go unnoticed.

use std::io;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command, CommandFactory};
use clap_mangen::roff::{bold, italic, roman, Inline, Roff};
use clap_mangen::Man;

use crate::cli::Cli;

/// The page's file name in man/.
pub const FILE: &str = "mesh.1";

/// The date in the page's title line. A constant, so that generating the
/// page twice gives the same bytes; change it with the page's content.
const DATE: &str = "2026-11-24";

/// The hand-written sections after the generated ones.
const TAIL: &str = include_str!("manual/mesh.1.tail");

/// How to regenerate, said in the page's first line and in the test.
pub const REGENERATE: &str = "cargo run -p mesh -- manual --out man/";

/// The whole page, as roff source.
pub fn render() -> String {
    let cmd = Cli::command();
    let mut top = cmd.clone();
    top.build();
    let version = top.get_version().unwrap_or_default().to_string();
    let man = Man::new(top.clone())
        .title("MESH")
        .section("1")
        .date(DATE)
        .source(format!("mesh {version}"))
        .manual("User commands");

    let mut out = String::new();
    out.push_str(&format!(".\\\" Generated from cmd/src/cli.rs and cmd/src/manual/mesh.1.tail; do not edit.\n.\\\" Regenerate with: {REGENERATE}\n"));
    out.push_str(&rendered(|w| man.render_title(w), Keep::All));
    out.push_str(&rendered(|w| man.render_name_section(w), Keep::Heading));
    out.push_str(".SH SYNOPSIS\n");
    out.push_str(&synopsis(&cmd));
    out.push_str(&rendered(|w| man.render_description_section(w), Keep::Heading));
    out.push_str(&rendered(|w| man.render_options_section(w), Keep::Heading));
    out.push_str(".SH COMMANDS\n");
    for sub in visible(&cmd) {
        out.push_str(&command_section(sub));
    }
    out.push_str(TAIL);
    out
}

/// Writes the page into `dir`; returns its path.
pub fn write(dir: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(FILE);
    std::fs::write(&path, render())?;
    Ok(path)
}

/// The subcommands a reader is told about, in declaration order.
fn visible(cmd: &Command) -> impl Iterator<Item = &Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set())
}

/// What of a rendered part to keep: clap_mangen starts every part with
/// the same apostrophe preamble (kept once, with the title) and a `.SH`
/// heading (dropped where a part goes under a heading of ours).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    All,
    Heading,
    Body,
}

/// One rendered part of clap_mangen's page.
fn rendered(part: impl FnOnce(&mut Vec<u8>) -> io::Result<()>, keep: Keep) -> String {
    let mut buf = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = part(&mut buf);
    strip(&String::from_utf8_lossy(&buf), keep)
}

fn strip(text: &str, keep: Keep) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let preamble = line.starts_with(".ie \\n(.g .ds Aq") || line.starts_with(".el .ds Aq");
        let heading = line.starts_with(".SH ");
        if (preamble && keep != Keep::All) || (heading && keep == Keep::Body) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// SYNOPSIS: one line per visible subcommand, `mesh help`, and the
/// global flags.
fn synopsis(cmd: &Command) -> String {
    let mut roff = Roff::new();
    roff.control("nf", []);
    for sub in visible(cmd) {
        roff.text(usage(sub));
    }
    roff.text([bold("mesh help"), roman(" ["), italic("COMMAND"), roman("]")]);
    roff.text([bold("mesh"), roman(" [ "), bold("-h"), roman(" | "), bold("-V"), roman(" ]")]);
    roff.control("fi", []);
    body(&roff)
}

/// `mesh NAME` with its arguments: positionals, then options, then the
/// arguments after `--`, as the synopsis of mesh(1) writes them.
fn usage(sub: &Command) -> Vec<Inline> {
    let mut line = vec![bold(format!("mesh {}", sub.get_name()))];
    let args: Vec<&Arg> = sub.get_arguments().filter(|a| !a.is_hide_set()).collect();
    for a in args.iter().filter(|a| a.is_positional() && !a.is_last_set()) {
        line.push(roman(" "));
        line.extend(positional(a));
    }
    for a in args.iter().filter(|a| !a.is_positional()) {
        line.push(roman(" "));
        line.extend(option(a));
    }
    for a in args.iter().filter(|a| a.is_last_set()) {
        line.push(roman(" "));
        line.push(bold("--"));
        line.push(roman(" "));
        line.extend(positional(a));
    }
    line
}

fn value_name(a: &Arg) -> String {
    a.get_value_names()
        .and_then(|v| v.first())
        .map(|v| v.to_string())
        .unwrap_or_else(|| a.get_id().as_str().to_uppercase())
}

/// Whether the argument may be given more than once.
fn repeats(a: &Arg) -> bool {
    matches!(a.get_action(), ArgAction::Append | ArgAction::Count)
        || a.get_num_args().is_some_and(|n| n.max_values() > 1)
}

fn positional(a: &Arg) -> Vec<Inline> {
    let dots = if repeats(a) { "..." } else { "" };
    let name = italic(value_name(a));
    if a.is_required_set() {
        vec![name, roman(dots)]
    } else {
        vec![roman("["), name, roman("]"), roman(dots)]
    }
}

fn option(a: &Arg) -> Vec<Inline> {
    let flag = match (a.get_short(), a.get_long()) {
        (Some(s), _) => format!("-{s}"),
        (None, Some(l)) => format!("--{l}"),
        (None, None) => return Vec::new(),
    };
    let mut v = vec![roman("["), bold(flag)];
    let takes_value = matches!(a.get_action(), ArgAction::Set | ArgAction::Append);
    if takes_value {
        v.push(roman(" "));
        v.push(italic(value_name(a)));
    }
    v.push(roman("]"));
    if repeats(a) {
        v.push(roman("..."));
    }
    v
}

/// A subcommand's part of COMMANDS: its synopsis, description and
/// options, without the flags every subcommand has (-h, -V, -v), which
/// OPTIONS describes once.
fn command_section(sub: &Command) -> String {
    let mut head = Roff::new();
    head.control("SS", [format!("mesh {}", sub.get_name()).as_str()]);
    head.text(usage(sub));
    let mut out = body(&head);
    let own = sub.clone().disable_help_flag(true).disable_version_flag(true);
    let man = Man::new(own);
    out.push_str(".PP\n");
    out.push_str(&rendered(|w| man.render_description_section(w), Keep::Body));
    let opts = rendered(|w| man.render_options_section(w), Keep::Body);
    if !opts.trim().is_empty() {
        out.push_str(&opts);
    }
    out
}

/// The roff text without the preamble.
fn body(roff: &Roff) -> String {
    strip(&roff.render(), Keep::Body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../man").join(FILE)
    }

    /// man/mesh.1 is what the clap definition makes now. Fails when a
    /// subcommand, option or help text changed without regenerating.
    #[test]
    fn committed_page_is_current() {
        let want = render();
        let have = std::fs::read_to_string(committed()).unwrap_or_default();
        if have != want {
            let first = have.lines().zip(want.lines()).position(|(a, b)| a != b);
            panic!(
                "man/{FILE} is out of date with the clap definition (first difference at line {}); regenerate it: {REGENERATE}",
                first.map_or_else(|| have.lines().count().min(want.lines().count()) + 1, |i| i + 1)
            );
        }
    }

    #[test]
    fn every_visible_subcommand_has_a_synopsis_line_and_a_section() {
        let page = render();
        let cmd = Cli::command();
        for sub in visible(&cmd) {
            let name = sub.get_name();
            assert!(page.contains(&format!(".SS \"mesh {name}\"")), "no section for {name}");
            assert!(page.contains(&format!("\\fBmesh {name}\\fR")), "no synopsis for {name}");
        }
        assert!(!page.contains("mesh manual"), "the hidden generator shows in the page");
    }

    #[test]
    fn synopsis_shows_values_and_repeats() {
        let cmd = Cli::command();
        let line = |name: &str| {
            let mut roff = Roff::new();
            roff.text(cmd.find_subcommand(name).map(usage).unwrap_or_default());
            roff.to_roff()
        };
        assert_eq!(
            line("up"),
            "\\fBmesh up\\fR [\\fIDEPLOY\\fR] [\\fB\\-m\\fR \\fIID\\fR]... [\\fB\\-\\-mount\\fR \\fIDIR\\fR]\n"
        );
        assert!(line("serve").ends_with("\\fB\\-\\-\\fR \\fICMD\\fR...\n"), "{}", line("serve"));
        assert!(line("keygen").contains(" \\fIFILE\\fR"), "a required positional is bare");
    }

    #[test]
    fn hand_written_sections_follow() {
        let page = render();
        for s in [".SH EXAMPLES", ".SH SEE ALSO", ".SH COMMANDS", ".SH OPTIONS", ".SH DESCRIPTION"] {
            assert!(page.contains(s), "missing {s}");
        }
        // One preamble, one title.
        assert_eq!(page.matches(".TH ").count(), 1);
        assert_eq!(page.matches(".ds Aq").count(), 2);
    }
}

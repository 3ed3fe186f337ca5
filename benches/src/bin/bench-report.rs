//! Turn the comparison benches' results into BENCHMARKS.md's results
//! section and the plot docs/bench.svg (normally run by
//! `scripts/bench-all.sh`):
//!
//! ```text
//! cargo run -p latchless-benches --bin bench-report            # the repository
//! cargo run -p latchless-benches --bin bench-report -- --root DIR
//! ```
//!
//! Reads `$CARGO_TARGET_DIR` (default `<root>/target`): `criterion/` and
//! `bench-results/`, and `<root>/Cargo.lock`; rewrites the part of
//! `<root>/BENCHMARKS.md` between the generated markers (the prose around
//! them is kept; the file is created if missing) and writes
//! `<root>/docs/bench.svg`. See `latchless_benches::report`.

use std::path::PathBuf;
use std::process::ExitCode;

use latchless_benches::report::{Inputs, build_report, build_svg, splice};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let root = match (args.next().as_deref(), args.next(), args.next()) {
        (None, _, _) => latchless_benches::workspace_root(),
        (Some("--root"), Some(dir), None) => PathBuf::from(dir),
        _ => {
            eprintln!("usage: bench-report [--root DIR]");
            return ExitCode::from(2);
        }
    };
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    };
    match run(&root, &target) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-report: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(root: &std::path::Path, target: &std::path::Path) -> Result<(), String> {
    let inputs = Inputs::load(
        &target.join("criterion"),
        &target.join("bench-results"),
        &root.join("Cargo.lock"),
    )
    .map_err(|e| e.to_string())?;
    if inputs.is_empty() {
        return Err("no results under target/ (run scripts/bench-all.sh)".into());
    }
    let md_path = root.join("BENCHMARKS.md");
    let existing = std::fs::read_to_string(&md_path).ok();
    let md = splice(existing.as_deref(), &build_report(&inputs));
    let write = |path: &std::path::Path, text: &str| {
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    write(&md_path, &md)?;
    let svg_path = root.join("docs").join("bench.svg");
    std::fs::create_dir_all(root.join("docs")).map_err(|e| e.to_string())?;
    write(&svg_path, &build_svg(&inputs))?;
    println!("wrote BENCHMARKS.md and docs/bench.svg");
    Ok(())
}

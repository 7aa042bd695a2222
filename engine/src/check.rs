//! `passerelle check`: validates the configuration file and every channel, printing each
//! problem as `file:line:col: message`.

use std::path::Path;

use crate::channel::load_dir;
use crate::config::ConfigFile;
use crate::diagnostic::Diagnostic;
use crate::settings::CommonArgs;

pub struct Report {
    pub problems: Vec<Diagnostic>,
    pub channels: usize,
    pub paused: Vec<(String, String)>,
}

pub fn run(args: &CommonArgs) -> Report {
    let mut problems = Vec::new();
    let file = match &args.config {
        Some(path) => ConfigFile::load(path).unwrap_or_else(|mut d| {
            problems.append(&mut d);
            ConfigFile::default()
        }),
        None if Path::new(crate::config::CONFIG_FILE).exists() => {
            ConfigFile::load(Path::new(crate::config::CONFIG_FILE)).unwrap_or_else(|mut d| {
                problems.append(&mut d);
                ConfigFile::default()
            })
        }
        None => ConfigFile::default(),
    };
    let mut loaded = load_dir(&args.channels_dir(&file));
    problems.append(&mut loaded.problems);
    let paused = loaded
        .channels
        .iter()
        .filter_map(|c| c.paused.as_ref().map(|why| (c.id.clone(), why.clone())))
        .collect();
    Report {
        problems,
        channels: loaded.channels.len(),
        paused,
    }
}

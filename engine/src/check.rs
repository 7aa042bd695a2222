//! `passerelle check`: validates the configuration file, every channel and every mapping,
//! printing each
//! problem as `file:line:col: message`.

use std::path::Path;

use crate::channel::load_dir_with;
use crate::config::ConfigFile;
use crate::diagnostic::Diagnostic;
use crate::settings::CommonArgs;

pub struct Report {
    pub problems: Vec<Diagnostic>,
    pub channels: usize,
    pub mappings: usize,
    pub paused: Vec<(String, String)>,
}

pub fn run(args: &CommonArgs) -> Report {
    let mut problems = Vec::new();
    let path = match &args.config {
        Some(path) => Some(path.as_path()),
        None => Some(Path::new(crate::config::CONFIG_FILE)).filter(|p| p.exists()),
    };
    let file = match path {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => match ConfigFile::parse(path, &text) {
                Ok(file) => {
                    // The TLS files are read as the MLLP listeners will read them.
                    if let Some(tls) = &file.mllp.tls
                        && let Err(d) = tls.check(path, &text)
                    {
                        problems.push(d);
                    }
                    file
                }
                Err(mut d) => {
                    problems.append(&mut d);
                    ConfigFile::default()
                }
            },
            Err(e) => {
                problems.push(Diagnostic::new(path, 0, 0, format!("cannot read: {e}")));
                ConfigFile::default()
            }
        },
        None => ConfigFile::default(),
    };
    let (library, mapping_problems) = args.mapping_library(&file);
    let mappings = library.mappings().len();
    problems.extend(
        mapping_problems
            .into_iter()
            .map(|p| Diagnostic::new(&p.file, p.line, p.column, p.message)),
    );
    let mut loaded = load_dir_with(
        &args.channels_dir(&file),
        &passerelle_mapping::live::Live::fixed(library),
    );
    problems.append(&mut loaded.problems);
    let paused = loaded
        .channels
        .iter()
        .filter_map(|c| c.paused.as_ref().map(|why| (c.id.clone(), why.clone())))
        .collect();
    Report {
        problems,
        channels: loaded.channels.len(),
        mappings,
        paused,
    }
}

//! `pinion import`: turns another gateway's definition into a pinion configuration and a
//! migration report. Pure: the definition in, YAML text, the files it names and the report out;
//! `cli::import` reads and writes the files.

pub mod azure;

use std::fmt::Write as _;

/// What became of one element of the imported definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Mapped with the same behaviour.
    Mapped,
    /// Mapped, with this difference.
    Differs(String),
    /// Not mapped: why, and what to do instead.
    NotMapped(String),
}

/// One line of the migration report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The element, e.g. `httpListeners/appGatewayHttpListener`.
    pub element: String,
    /// What became of it.
    pub outcome: Outcome,
    /// What it became in pinion (`listeners/port-443`), when anything.
    pub target: String,
}

/// The migration report: every element and what became of it.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Lines in the order the elements were met.
    pub entries: Vec<Entry>,
}

impl Report {
    /// Records an element mapped as it was.
    pub fn mapped(&mut self, element: impl Into<String>, target: impl Into<String>) {
        self.push(element, Outcome::Mapped, target);
    }

    /// Records an element mapped with a difference.
    pub fn differs(
        &mut self,
        element: impl Into<String>,
        target: impl Into<String>,
        why: impl Into<String>,
    ) {
        self.push(element, Outcome::Differs(why.into()), target);
    }

    /// Records an element that was not mapped.
    pub fn not_mapped(&mut self, element: impl Into<String>, why: impl Into<String>) {
        self.push(element, Outcome::NotMapped(why.into()), "");
    }

    fn push(&mut self, element: impl Into<String>, outcome: Outcome, target: impl Into<String>) {
        self.entries.push(Entry {
            element: element.into(),
            outcome,
            target: target.into(),
        });
    }

    /// Entries about `element` (exact match).
    pub fn about(&self, element: &str) -> Vec<&Entry> {
        self.entries
            .iter()
            .filter(|e| e.element == element)
            .collect()
    }

    /// The report as Markdown.
    pub fn markdown(&self, source: &str) -> String {
        let count = |f: fn(&Outcome) -> bool| self.entries.iter().filter(|e| f(&e.outcome)).count();
        let mut out = format!("# Migration report: {source}\n\n");
        let _ = writeln!(
            out,
            "{} mapped, {} mapped with a difference, {} not mapped.\n",
            count(|o| matches!(o, Outcome::Mapped)),
            count(|o| matches!(o, Outcome::Differs(_))),
            count(|o| matches!(o, Outcome::NotMapped(_))),
        );
        out.push_str("| element | result | pinion | notes |\n|---|---|---|---|\n");
        for e in &self.entries {
            let (result, note) = match &e.outcome {
                Outcome::Mapped => ("mapped", ""),
                Outcome::Differs(n) => ("mapped with a difference", n.as_str()),
                Outcome::NotMapped(n) => ("**not mapped**", n.as_str()),
            };
            let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
            let _ = writeln!(
                out,
                "| `{}` | {result} | {} | {} |",
                cell(&e.element),
                if e.target.is_empty() {
                    String::new()
                } else {
                    format!("`{}`", cell(&e.target))
                },
                cell(note)
            );
        }
        out
    }
}

/// A file the configuration names, to be written beside it.
#[derive(Debug, Clone)]
pub struct OutFile {
    /// File name inside the certificates directory.
    pub name: String,
    /// Its contents.
    pub bytes: Vec<u8>,
    /// Whether it holds a secret (a private key, the affinity key): written with mode 0600.
    pub secret: bool,
}

/// The result of an import.
#[derive(Debug)]
pub struct Imported {
    /// The configuration, YAML.
    pub yaml: String,
    /// Files the configuration names (under the certificates directory).
    pub files: Vec<OutFile>,
    /// What became of every element.
    pub report: Report,
    /// Whether the configuration serves anything: `false` when the source had routing rules
    /// and none could be mapped (it would answer 404 to every request).
    pub routes_anything: bool,
}

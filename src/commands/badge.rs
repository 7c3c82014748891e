//! `pushdeploy badge`: a small SVG of the last deploy's outcome.

use std::path::PathBuf;

use clap::Args;

use crate::error::{Error, ExitCode};
use crate::report;
use crate::target_dir::history::{self, Outcome};

/// Prints an SVG badge of the last deploy's outcome (`deploy | live 1a2b3c4`, green; failed,
/// red; rolled back, orange), for a README or a status page. Ignored pushes and dry runs do
/// not count.
///
/// For example, after each deploy from `[notify] command`:
/// `pushdeploy badge --repo "$GIT_DIR" > /srv/www/status/deploy.svg`.
#[derive(Debug, Args)]
pub struct BadgeArgs {
    /// The bare repository [default: $GIT_DIR, else the current directory]
    #[arg(long, value_name = "REPO")]
    repo: Option<PathBuf>,
    /// The text on the left
    #[arg(long, default_value = "deploy", value_name = "TEXT")]
    label: String,
}

pub fn run(args: BadgeArgs) -> Result<ExitCode, Error> {
    let (layout, _) = super::recorded::open_history(args.repo)?;
    let entries = history::read_all(&layout)?;
    let last = entries.iter().rev().find(|entry| {
        matches!(
            entry.result,
            Outcome::Live | Outcome::Failed | Outcome::RolledBack | Outcome::Error
        )
    });
    let (text, colour) = match last {
        None => ("no deploys".to_owned(), "#9f9f9f"),
        Some(entry) => {
            let commit =
                entry.commit.map(|commit| format!(" {}", commit.short())).unwrap_or_default();
            let colour = match entry.result {
                Outcome::Live => "#4c1",
                Outcome::RolledBack => "#fe7d37",
                _ => "#e05d44",
            };
            (format!("{}{commit}", entry.result.name()), colour)
        }
    };
    report::stdout(&svg(&args.label, &text, colour));
    Ok(ExitCode::Success)
}

/// Returns a flat two-part badge; widths are estimated at 7 px a character (Verdana 11).
fn svg(label: &str, text: &str, colour: &str) -> String {
    let escape = |text: &str| {
        text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
    };
    let left = 10 + 7 * label.chars().count();
    let right = 10 + 7 * text.chars().count();
    let (label, text) = (escape(label), escape(text));
    let width = left + right;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"20\" role=\"img\" aria-label=\"{label}: {text}\">\n\
         <title>{label}: {text}</title>\n\
         <rect width=\"{left}\" height=\"20\" fill=\"#555\"/>\n\
         <rect x=\"{left}\" width=\"{right}\" height=\"20\" fill=\"{colour}\"/>\n\
         <g fill=\"#fff\" text-anchor=\"middle\" font-family=\"Verdana,DejaVu Sans,sans-serif\" font-size=\"11\">\n\
         <text x=\"{lx}\" y=\"14\">{label}</text>\n\
         <text x=\"{rx}\" y=\"14\">{text}</text>\n\
         </g>\n\
         </svg>\n",
        lx = left / 2,
        rx = left + right / 2,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn badge_escapes_its_text_and_sizes_to_it() {
        let badge = svg("deploy", "live <1a2b3c4>", "#4c1");
        assert!(badge.contains("<text x=\"106\" y=\"14\">live &lt;1a2b3c4&gt;</text>"), "{badge}");
        assert!(
            badge.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"160\""),
            "{badge}"
        );
    }
}

//! prodhcp.ron(5) from the annotated example configuration (etc/prodhcp.ron).
//!
//! The example documents each field in the comment lines right above it. The page is: the
//! file's opening comment as DESCRIPTION, one tagged paragraph per field (named by its path,
//! e.g. `cluster.peers` or `subnets[].pools`) with its comment as the text, and the whole
//! file as EXAMPLE. Written by hand: no kept crate turns commented RON into roff, and the
//! structure needed here (comment block, then `name:` at some indentation) is small.

/// Escapes plain text for roff: backslashes, hyphens (so they are not turned into
/// typographic dashes), and a leading `.` or `'` (which would start a request).
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            _ => out.push(c),
        }
    }
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

/// One comment block: paragraphs of running text and preformatted lines (indented comment
/// lines, such as commands), in order.
enum Chunk {
    Text(String),
    Pre(Vec<String>),
}

fn chunks(lines: &[String]) -> Vec<Chunk> {
    let mut out: Vec<Chunk> = Vec::new();
    let mut text = String::new();
    let flush = |text: &mut String, out: &mut Vec<Chunk>| {
        if !text.is_empty() {
            out.push(Chunk::Text(std::mem::take(text)));
        }
    };
    for line in lines {
        if line.trim().is_empty() {
            flush(&mut text, &mut out);
        } else if line.starts_with("  ") {
            flush(&mut text, &mut out);
            match out.last_mut() {
                Some(Chunk::Pre(v)) => v.push(line.trim_end().to_string()),
                _ => out.push(Chunk::Pre(vec![line.trim_end().to_string()])),
            }
        } else {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(line.trim());
        }
    }
    flush(&mut text, &mut out);
    out
}

fn render_chunks(out: &mut String, lines: &[String], first_pp: bool) {
    for (i, c) in chunks(lines).into_iter().enumerate() {
        match c {
            Chunk::Text(t) => {
                if i > 0 || first_pp {
                    out.push_str(".IP\n");
                }
                out.push_str(&escape(&t));
                out.push('\n');
            }
            Chunk::Pre(v) => {
                out.push_str(".IP\n.nf\n");
                for l in v {
                    out.push_str(&escape(l.trim_start()));
                    out.push('\n');
                }
                out.push_str(".fi\n");
            }
        }
    }
}

/// The text of a `//` comment line without the marker and its one following space.
fn comment(line: &str) -> Option<String> {
    let t = line.trim_start();
    let rest = t.strip_prefix("//")?;
    Some(rest.strip_prefix(' ').unwrap_or(rest).to_string())
}

/// `name` of a line `    name: value`, or `(` / `[` openers without a name.
fn field(line: &str) -> Option<(usize, &str, &str)> {
    let indent = line.len() - line.trim_start().len();
    let t = line.trim_start();
    let (name, rest) = t.split_once(':')?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    Some((indent, name, rest.trim()))
}

/// Renders the page.
pub(crate) fn render(text: &str, version: &str) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        ".TH PRODHCP.RON 5 \"\" \"prodhcp {version}\" \"prodhcp\"\n"
    ));
    out.push_str(".SH NAME\nprodhcp.ron \\- prodhcpd configuration file\n");
    out.push_str(".SH SYNOPSIS\n/etc/prodhcp/prodhcp.ron\n");

    let lines: Vec<&str> = text.lines().collect();
    // The opening comment, up to the line that opens the top-level tuple.
    let mut i = 0;
    let mut head = Vec::new();
    while i < lines.len() && !lines[i].trim_start().starts_with('(') {
        if let Some(c) = comment(lines[i]) {
            head.push(c);
        }
        i += 1;
    }
    // Drop the file's own title line ("prodhcp configuration: /etc/…").
    if head
        .first()
        .is_some_and(|l| l.starts_with("prodhcp configuration"))
    {
        head.remove(0);
    }
    out.push_str(".SH DESCRIPTION\n");
    render_chunks(&mut out, &head, false);
    out.push_str(".PP\nThe fields follow, each with its default and limits; nested fields are named by their path (subnets[].pools is the pools field of each entry of subnets). The EXAMPLE section at the end is the complete annotated file, also installed as /usr/share/doc/prodhcp/examples/prodhcp.ron.\n");
    out.push_str(".SH FIELDS\n");

    // Open containers: (indentation, path segment).
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut block: Vec<String> = Vec::new();
    for line in &lines[i + 1..] {
        if let Some(c) = comment(line) {
            block.push(c);
            continue;
        }
        let trimmed = line.trim();
        if trimmed.is_empty() {
            // A comment not followed by a field (a note on the next entry): keep it, as text
            // under the field before it.
            if !block.is_empty() {
                render_chunks(&mut out, &block, true);
                block.clear();
            }
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        while stack.last().is_some_and(|(d, _)| *d >= indent) {
            stack.pop();
        }
        if let Some((indent, name, rest)) = field(line) {
            let mut path = String::new();
            for (_, seg) in &stack {
                if seg == "[]" {
                    path.push_str("[]");
                } else {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(seg);
                }
            }
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(name);
            out.push_str(&format!(".TP\n.B {}\n", escape(&path)));
            if block.is_empty() {
                out.push_str("(no description)\n");
            } else {
                render_chunks(&mut out, &block, false);
            }
            block.clear();
            if rest.starts_with('(') && !rest.ends_with("),") && !rest.ends_with(')')
                || rest.starts_with('[') && !rest.ends_with("],") && !rest.ends_with(']')
                || rest.starts_with('{') && !rest.ends_with("},") && !rest.ends_with('}')
            {
                stack.push((indent, name.to_string()));
            }
        } else if trimmed == "(" {
            // An entry of a list (a subnet): its fields are `list[].field`.
            stack.push((indent, "[]".to_string()));
            block.clear();
        } else {
            block.clear();
        }
    }

    out.push_str(".SH EXAMPLE\nThe annotated example configuration:\n.PP\n.nf\n");
    for line in &lines {
        out.push_str(&escape(line));
        out.push('\n');
    }
    out.push_str(".fi\n");
    out.push_str(".SH SEE ALSO\nprodhcpd(8), prodhcpctl(8)\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_get_their_comment_and_path() {
        let page = render(
            "// title\n// Intro text.\n(\n    // The state.\n    state_dir: \"/x\",\n    subnets: [\n        (\n            // Its network.\n            network: \"10.0.0.0/8\",\n        ),\n    ],\n)\n",
            "0",
        );
        assert!(page.contains(".B state_dir\nThe state.\n"), "{page}");
        assert!(
            page.contains(".B subnets[].network\nIts network.\n"),
            "{page}"
        );
        assert!(page.contains("Intro text."), "{page}");
    }

    #[test]
    fn escapes_roff() {
        assert_eq!(escape(".x-y\\"), "\\&.x\\-y\\e");
    }
}

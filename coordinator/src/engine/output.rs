//! Output processing of one request: incremental detokenization (text deltas that never split
//! a UTF-8 character), stop strings, usage counts and the final finish reason.

use crate::tokenizer::TextTokenizer;

/// Why a request ended, as the public API spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
    Abort,
    Error,
    /// The request's deadline (`grpc-timeout`) passed: aborted, and the stream ends with
    /// `DEADLINE_EXCEEDED`.
    Deadline,
}

/// What one request has produced so far.
#[derive(Debug)]
pub struct OutputState {
    pub prompt_tokens: u32,
    pub output_ids: Vec<u32>,
    /// Text already sent to the client.
    pub sent_text: String,
    stop: Vec<String>,
}

/// Text and tokens to send after one step, and whether a stop string ended the request.
#[derive(Debug, Default, PartialEq)]
pub struct Delta {
    pub token_ids: Vec<u32>,
    pub text: String,
    pub matched_stop: Option<String>,
}

impl OutputState {
    /// State for a request with `prompt_tokens` prompt tokens and these stop strings.
    pub fn new(prompt_tokens: u32, stop: Vec<String>) -> Self {
        Self {
            prompt_tokens,
            output_ids: Vec::new(),
            sent_text: String::new(),
            stop,
        }
    }

    /// Takes new tokens; returns what to stream. Text is held back while the decoded text ends
    /// in an incomplete character; a stop string cuts the text before it and ends the request.
    pub fn push(&mut self, tokens: &[u32], tokenizer: Option<&TextTokenizer>) -> Delta {
        self.output_ids.extend_from_slice(tokens);
        let mut delta = Delta {
            token_ids: tokens.to_vec(),
            ..Delta::default()
        };
        let Some(tokenizer) = tokenizer else {
            return delta;
        };
        let Ok(full) = tokenizer.decode(&self.output_ids) else {
            return delta;
        };
        // The earliest stop string anywhere in the text not yet matched.
        let found = self
            .stop
            .iter()
            .filter_map(|s| full.find(s.as_str()).map(|at| (at, s.clone())))
            .min_by_key(|(at, _)| *at);
        let (visible, matched) = match found {
            Some((at, s)) => (&full[..at], Some(s)),
            None => (full.as_str(), None),
        };
        let visible = if matched.is_none() && visible.ends_with('\u{FFFD}') {
            // wait for the rest of a multi-byte character
            &visible[..visible.len() - '\u{FFFD}'.len_utf8()]
        } else {
            visible
        };
        // Hold back a tail that may be the start of a stop string, so a stop string is never
        // streamed in part.
        let visible = if matched.is_none() {
            &visible[..visible.len() - self.partial_stop_len(visible)]
        } else {
            visible
        };
        if visible.starts_with(&self.sent_text) && visible.len() > self.sent_text.len() {
            delta.text = visible[self.sent_text.len()..].to_string();
            self.sent_text = visible.to_string();
        }
        delta.matched_stop = matched;
        delta
    }

    /// The text held back so far (a possible stop-string start or an unfinished character),
    /// released when the request ends without a stop string.
    pub fn flush(&mut self, tokenizer: Option<&TextTokenizer>) -> String {
        let Some(full) = tokenizer.and_then(|t| t.decode(&self.output_ids).ok()) else {
            return String::new();
        };
        if full.starts_with(&self.sent_text) && full.len() > self.sent_text.len() {
            let rest = full[self.sent_text.len()..].to_string();
            self.sent_text = full;
            rest
        } else {
            String::new()
        }
    }

    /// Bytes at the end of `text` that are a proper prefix of some stop string.
    fn partial_stop_len(&self, text: &str) -> usize {
        self.stop
            .iter()
            .flat_map(|stop| {
                (1..stop.len())
                    .rev()
                    .filter(|&n| stop.is_char_boundary(n) && text.ends_with(&stop[..n]))
                    .take(1)
            })
            .max()
            .unwrap_or(0)
    }

    /// Generated token count.
    pub fn completion_tokens(&self) -> u32 {
        self.output_ids.len() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_add_up_to_the_decoded_text_and_stop_strings_cut_it() {
        let tok = crate::demo::tokenizer().unwrap();
        let ids = tok.encode("The quick brown fox jumps", false).unwrap();
        let mut state = OutputState::new(3, vec![]);
        let mut streamed = String::new();
        for id in &ids {
            streamed.push_str(&state.push(&[*id], Some(&tok)).text);
        }
        assert_eq!(streamed, tok.decode(&ids).unwrap());
        assert_eq!(state.completion_tokens() as usize, ids.len());

        let mut state = OutputState::new(3, vec!["brown".into()]);
        let mut streamed = String::new();
        let mut matched = None;
        for id in &ids {
            let d = state.push(&[*id], Some(&tok));
            streamed.push_str(&d.text);
            if d.matched_stop.is_some() {
                matched = d.matched_stop;
                break;
            }
        }
        assert_eq!(matched.as_deref(), Some("brown"));
        assert_eq!(streamed.trim_end(), "The quick");
    }
}

//! [`ChatTemplate`]: renders Hugging Face `chat_template` strings (Jinja) with `minijinja`, the
//! way `transformers`' `apply_chat_template` does (`messages`, `add_generation_prompt`,
//! `bos_token`, `eos_token`, Python string methods, `raise_exception`).

use crate::error::CoordinatorError;
use serde::Serialize;

/// The 2B-4T chat format (FORMATS.md §2.B), used for family-B models that ship no template.
pub const BITNET_CHAT_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}\
{% if message['role'] == 'system' %}System: {% elif message['role'] == 'user' %}User: \
{% else %}Assistant: {% endif %}{{ message['content'] }}<|eot_id|>{% endfor %}\
{% if add_generation_prompt %}Assistant: {% endif %}";

/// One chat message.
#[derive(Clone, Debug, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// A Jinja chat template with the special tokens it may reference.
#[derive(Clone, Debug)]
pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
}

/// A special token in `tokenizer_config.json`: a string or an `AddedToken` object.
fn token_text(value: Option<&serde_json::Value>) -> String {
    match value {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Object(o)) => o
            .get("content")
            .and_then(|c| c.as_str())
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    }
}

impl ChatTemplate {
    /// A template from its source and special tokens.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Self {
        Self {
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        }
    }

    /// The template of a parsed `tokenizer_config.json`: `chat_template` as a string, or the
    /// entry named "default" of a list of named templates.
    pub fn from_tokenizer_config(config: &serde_json::Value) -> Option<Self> {
        let source = match config.get("chat_template")? {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(list) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .or_else(|| list.first())?
                .get("template")?
                .as_str()?
                .to_string(),
            _ => return None,
        };
        Some(Self {
            source,
            bos_token: token_text(config.get("bos_token")),
            eos_token: token_text(config.get("eos_token")),
        })
    }

    /// Renders the conversation; `add_generation_prompt` appends the assistant's turn header.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, CoordinatorError> {
        let mut env = minijinja::Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template("chat", &self.source)
            .map_err(|e| CoordinatorError::ChatTemplate(e.to_string()))?;
        let template = env
            .get_template("chat")
            .map_err(|e| CoordinatorError::ChatTemplate(e.to_string()))?;
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(|e| CoordinatorError::ChatTemplate(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(text: &str) -> Vec<ChatMessage> {
        vec![ChatMessage {
            role: "user".into(),
            content: text.into(),
        }]
    }

    #[test]
    fn bitnet_format_renders_roles_and_generation_prompt() {
        let t = ChatTemplate::new(BITNET_CHAT_TEMPLATE, "<|begin_of_text|>", "<|end_of_text|>");
        let mut messages = vec![ChatMessage {
            role: "system".into(),
            content: "Be brief.".into(),
        }];
        messages.extend(user("Hi"));
        assert_eq!(
            t.render(&messages, true).unwrap(),
            "<|begin_of_text|>System: Be brief.<|eot_id|>User: Hi<|eot_id|>Assistant: "
        );
        assert!(!t.render(&messages, false).unwrap().ends_with("Assistant: "));
    }

    #[test]
    fn reads_string_object_tokens_and_python_methods() {
        let config = serde_json::json!({
            "bos_token": {"content": "<s>", "lstrip": false},
            "eos_token": "</s>",
            "chat_template": "{{ bos_token }}{% for m in messages %}{{ m['content'].strip() | upper }}{% endfor %}{{ eos_token }}"
        });
        let t = ChatTemplate::from_tokenizer_config(&config).unwrap();
        assert_eq!(t.render(&user("  hey "), false).unwrap(), "<s>HEY</s>");
    }

    #[test]
    fn template_errors_are_reported() {
        let t = ChatTemplate::new("{{ raise_exception('no system role') }}", "", "");
        let err = t.render(&user("x"), true).unwrap_err().to_string();
        assert!(err.contains("no system role"), "{err}");
        assert!(ChatTemplate::from_tokenizer_config(&serde_json::json!({})).is_none());
    }
}

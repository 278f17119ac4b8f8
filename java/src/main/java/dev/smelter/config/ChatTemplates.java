package dev.smelter.config;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The chat templates a config may name ({@code chat_template: chatml}), the names mergekit knows. Each is Smelter's
 * own Jinja text for the public prompt format of that name.
 */
public final class ChatTemplates {
    private ChatTemplates() {}

    private static final Map<String, String> TEMPLATES = new LinkedHashMap<>();

    static {
        // ChatML: every turn is <|im_start|>ROLE\nCONTENT<|im_end|>\n.
        TEMPLATES.put("chatml", """
                {%- for message in messages -%}
                {{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}
                {%- endfor -%}
                {%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}
                """);
        // Llama 3: BOS, then <|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT<|eot_id|> per turn.
        TEMPLATES.put("llama3", """
                {%- for message in messages -%}
                {%- if loop.first -%}{{- bos_token -}}{%- endif -%}
                {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + (message['content'] | trim) + '<|eot_id|>' -}}
                {%- endfor -%}
                {%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}
                """);
        // Mistral instruct: BOS, [INST] user [/INST] answer EOS, an optional system message before the first user turn.
        TEMPLATES.put("mistral", """
                {%- set system = messages[0]['content'] if messages and messages[0]['role'] == 'system' else none -%}
                {%- set turns = messages[1:] if system is not none else messages -%}
                {{- bos_token -}}
                {%- for message in turns -%}
                {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
                {{- raise_exception('roles must alternate user/assistant after an optional system message') -}}
                {%- endif -%}
                {%- if message['role'] == 'user' -%}
                {%- set text = system + '\\n\\n' + message['content'] if loop.first and system is not none else message['content'] -%}
                {{- ' [INST] ' + text + ' [/INST]' -}}
                {%- else -%}
                {{- ' ' + message['content'] + eos_token -}}
                {%- endif -%}
                {%- endfor -%}
                """);
        // Alpaca: the system text, then ### Instruction: / ### Input: / ### Response: blocks.
        TEMPLATES.put("alpaca", """
                {%- set systems = messages | selectattr('role', 'equalto', 'system') | list -%}
                {%- if systems -%}{{- (systems | last)['content'] | trim -}}{%- endif -%}
                {{- '\\n\\n' -}}
                {%- for message in messages -%}
                {%- set header = {'user': '### Instruction:', 'user_context': '### Input:', 'assistant': '### Response:'}.get(message['role']) -%}
                {%- if header -%}
                {{- header + '\\n' + (message['content'] | trim) -}}
                {%- if not loop.last -%}{{- '\\n\\n' -}}{%- endif -%}
                {%- endif -%}
                {%- endfor -%}
                {%- if add_generation_prompt and messages[-1]['role'] != 'assistant' -%}{{- '\\n\\n### Response:\\n' -}}{%- endif -%}
                """);
        // EXAONE: [|ROLE|]CONTENT, an empty system turn first where none is given, [|endofturn|] after each non-user turn.
        TEMPLATES.put("exaone", """
                {%- for message in messages -%}
                {%- if loop.first and message['role'] != 'system' -%}{{- '[|system|][|endofturn|]\\n' -}}{%- endif -%}
                {{- '[|' + message['role'] + '|]' + message['content'] -}}
                {%- if message['role'] == 'user' -%}{{- '\\n' -}}{%- else -%}{{- '[|endofturn|]\\n' -}}{%- endif -%}
                {%- endfor -%}
                {%- if add_generation_prompt -%}{{- '[|assistant|]' -}}{%- endif -%}
                """);
    }

    /** The template of that name, or null. */
    public static String named(String name) {
        return TEMPLATES.get(name);
    }

    public static List<String> names() {
        return List.copyOf(TEMPLATES.keySet());
    }
}

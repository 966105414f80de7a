"""The one check for credentials in overrides, environment variables and tags.

Why: an override is saved in ``.hydra/``, ``resolved_config.yaml``, logger hyperparameters and reports,
and for a SageMaker job it is part of the command line the container echoes to CloudWatch; a job's
environment and tags are shown to anyone who can describe the job. Credentials belong in the
environment of the process that needs them, or (for jobs) in AWS Secrets Manager, named through
``hydra.launcher.secrets``. ``train.py`` (before Hydra writes anything) and the SageMaker launcher
(before anything is staged or submitted) call the same functions, so a word added here protects both.

Names are split into words (``WANDB_API_KEY`` -> wandb, api, key; ``apiKey`` -> api, key) and refused when
a word is a secret word; values are refused by shape (``user:password@`` or ``?password=`` in a URL, AWS key
ids and secret keys, W&B, Google, Stripe, GitLab and Azure keys, private keys, common token prefixes).
Messages name the key and what the value looks like, never the value. ``bincount.secrets_config`` applies
the same check to every resolved value of a composed config, before Hydra writes it.

Standard library only, and our own patterns rather than ``detect-secrets``' plugins: this module runs
before Hydra starts (on every ``python train.py``, ``--help`` included) and inside the job, where only the
standard library is promised. Measured (detect-secrets 1.5.0, its last release, May 2024; this machine):
importing its Stripe/GitLab/Azure/basic-auth/keyword plugins takes ~100 ms (``--help`` takes ~1.3 s), a
value ~0.02 ms; and it would not replace a pattern here: it has no Google ``AIza`` key, no ``sk_test_``, no
query-string password, its entropy plugins flag ``resnet50``. Its regexes are the reference for the
Stripe, GitLab and Azure shapes below.
"""

from __future__ import annotations

import re
from typing import Iterable

# A name is secret if one of its words is one of SECRET_WORDS, or ends with one of SECRET_SUFFIXES
# (``HF_TOKEN``, ``MYTOKEN``, ``DBPASSWORD``); "key" and "pass" only as whole words (not "monkey", "compass").
SECRET_WORDS = frozenset({"key", "pwd", "pass", "passphrase", "pat", "credential", "credentials", "creds"})
SECRET_SUFFIXES = ("token", "secret", "password", "passwd", "apikey", "accesskey", "secretkey", "privatekey")
# hydra.launcher.secrets.<ENV>=<Secrets Manager name> names a secret, it does not carry one.
REFERENCES = "hydra.launcher.secrets"
ADVICE = ("credentials must not travel in overrides, environment variables or tags (they are saved in .hydra/, "
          "logs and the job's description): set them in the environment of the process that reads them, or for "
          "SageMaker jobs store them in AWS Secrets Manager and set hydra.launcher.secrets.<ENV_NAME>=<secret name>"
          " (docs/security.md)")
_B64 = "A-Za-z0-9/+"
VALUE_SHAPES = (  # a password of only '*' is a masked one (bincount.sweep.study.safe_url), not a credential
    ("a URL with a password (user:password@)", re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:(?!\*+@)[^/\s@]+@")),
    ("an AWS access key id", re.compile(r"(?<![A-Z0-9])(AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Z0-9])")),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY")),
    ("a GitHub token", re.compile(r"(?<![A-Za-z0-9])(gh[pousr]_[A-Za-z0-9]{30,}|github_pat_\w{30,})")),
    ("a Hugging Face token", re.compile(r"(?<![A-Za-z0-9])hf_[A-Za-z0-9]{30,}")),
    ("an API key (sk-...)", re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_-]{20,}")),
    ("a Slack token", re.compile(r"(?<![A-Za-z0-9])xox[abposr]-[A-Za-z0-9-]{10,}")),
    ("a JSON web token", re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.")),
    ("a W&B API key (40 hex characters)", re.compile(r"(?<![A-Za-z0-9])[0-9a-fA-F]{40}(?![A-Za-z0-9])")),
    ("a Google API key (AIza...)", re.compile(r"(?<![A-Za-z0-9])AIza[0-9A-Za-z_-]{30,}")),
    ("a Stripe key (sk_live_...)", re.compile(r"(?<![A-Za-z0-9])[rs]k_(?:live|test)_[0-9A-Za-z]{16,}")),
    ("a GitLab token (glpat-...)", re.compile(r"(?<![A-Za-z0-9])(?:glpat|gldt|glft|glsoat|glrt|glcbt|glptt|glimt|gloas|"
                                            r"glagent)-[A-Za-z0-9_-]{20,}|GR1348941[A-Za-z0-9_-]{20,}")),
    ("an Azure key (AccountKey=...)", re.compile(r"(?i)(?<![a-z])(?:Account|SharedAccess)Key=(?!\*+(?:;|$))[^;\s]+")),
)
# A query parameter (or a ``;``-separated connection-string field) whose name is secret (``?password=``,
# ``&access_token=``, ``;Password=``), or a signature (Azure SAS ``sig=``, presigned ``X-Amz-Signature=``).
_PARAM = re.compile(r"[?&;]\s*([A-Za-z_][\w.-]*)=([^&;#\s]+)")
SIGNATURES = frozenset({"sig", "signature", "x-amz-signature"})
_AWS_SECRET = re.compile(rf"(?<![{_B64}=])[{_B64}]{{40}}(?![{_B64}=])")
_DICT_NAME = re.compile(r"(?:^|[{,\s])([A-Za-z_][\w.-]*)\s*:(?!//)")  # names inside a {k: v} override value
_ENV_REF = re.compile(r"oc\.env:\s*['\"]?([A-Za-z_]\w*)")  # ${oc.env:NAME} (or "NAME") copies a variable in
_WORD = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")


class SecretError(ValueError):
    """A credential where it would be saved or shown; the message names the key, never the value."""


def secret_name(name: str, bare_key: bool = True) -> bool:
    """Whether a word of ``name`` is a secret word. Without ``bare_key`` (keys of config files, where "key"
    alone is a sort key or a dict key: Lightning's ``profiler.sort_by_key``), "key" counts only after a word
    that makes a secret suffix with it (``api_key``, ``access_key``, ``private_key``)."""
    words = [w.lower() for w in _WORD.split(name) if w]
    if any((w in SECRET_WORDS and (bare_key or w != "key")) or w.endswith(SECRET_SUFFIXES) for w in words):
        return True
    return not bare_key and any((a + b).endswith(SECRET_SUFFIXES) for a, b in zip(words, words[1:]))


def _aws_secret(value: str) -> bool:
    """40 base64 characters of a random key: mixed case, digits, many distinct characters (paths are not)."""
    return any(re.search("[A-Z]", m) and re.search("[a-z]", m) and re.search("[0-9]", m) and len(set(m)) >= 22
               for m in _AWS_SECRET.findall(value))


def query_secrets(text: str) -> list[tuple[str, str]]:
    """``(name, value)`` of each query parameter of ``text`` that carries a credential (a masked ``***`` does not)."""
    return [(m[1], m[2]) for m in _PARAM.finditer(text)
            if (secret_name(m[1]) or m[1].lower() in SIGNATURES) and m[2].strip("*")]


def mask_query(text: str) -> str:
    """``text`` with the value of every credential query parameter replaced by ``***``."""
    def masked(m: re.Match) -> str:
        hide = (secret_name(m[1]) or m[1].lower() in SIGNATURES) and m[2].strip("*")
        return f"{m[0][:m.start(2) - m.start()]}***" if hide else m[0]
    return _PARAM.sub(masked, text)


def secret_shape(value: str, names: bool = True) -> str | None:
    """What ``value`` looks like when it looks like a credential (for the message), else None.

    With ``names``, also a ``{name: ...}`` mapping or ``${oc.env:NAME}`` whose name is secret: either
    puts the credential into the saved config as surely as the value itself would.
    """
    for label, pattern in VALUE_SHAPES:
        if pattern.search(value):
            return label
    if _aws_secret(value):
        return "an AWS secret access key"
    query = query_secrets(value)
    if query:
        return f"a URL with a credential in its query string ({query[0][0]}=...)"
    inner = [n for n in (*_DICT_NAME.findall(value), *_ENV_REF.findall(value)) if secret_name(n)] if names else []
    return f"a mapping or ${{oc.env:}} with a secret name ({inner[0]})" if inner else None


def problems(items: Iterable[tuple[str, object]], where: str, names: bool = True, bare_key: bool = True) -> list[str]:
    """One line per ``(key, value)`` whose key (when ``names``) or value looks like a credential."""
    found = []
    for i, (key, value) in enumerate(items):
        pasted = secret_shape(key, names=False)  # a key can be a pasted secret: then it is not named
        label = f"{where} #{i + 1}" if pasted else f"{where} {key!r}"
        shape = secret_shape(str(value), names)
        if pasted or (names and secret_name(key, bare_key)):
            found.append(f"{label}: the name looks like a credential")
        elif shape:
            found.append(f"{label}: the value looks like {shape}")
    return found


def refuse(found: list[str]) -> None:
    if found:
        raise SecretError(f"refused: {'; '.join(found)}. {ADVICE}")


def check(items: Iterable[tuple[str, object]], where: str = "setting", names: bool = True) -> None:
    refuse(problems(list(items), where, names))


def split_override(override: str) -> tuple[str, str]:
    """``+a.b=v`` -> (``a.b``, ``v``); a flag or a deletion without ``=`` has an empty value."""
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def check_overrides(overrides: Iterable[str], where: str = "override") -> None:
    """Refuse overrides whose key or value looks like a credential.

    ``hydra.launcher.secrets.<ENV>=<name>`` names a secret in AWS Secrets Manager: its key is allowed,
    its value is still checked.
    """
    pairs = [split_override(o) for o in overrides]
    is_ref = [k == REFERENCES or k.startswith(REFERENCES + ".") for k, _ in pairs]
    found = problems([p for p, ref in zip(pairs, is_ref) if not ref], where)
    refuse(found + problems([p for p, ref in zip(pairs, is_ref) if ref], where, names=False))

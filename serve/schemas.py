"""Request and response schemas, with bounds at the edge.

Types are strict: `true` is not a number of beams and `"4"` is not a number (a client that sends them has a
bug we should not hide). Unknown parameters are refused, never ignored. Values that depend on each other or
on the model's defaults (num_return_sequences vs num_beams, sampling-only values) are checked by
radreport.generation.GenerationParams.check(), the decoding contract itself, whose field types (and so ranges)
these fields share. The bound written here (no_repeat_ngram_size <= 64) is the edge's alone.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from radreport.config import NonNegativeInt, PositiveInt
from radreport.generation import LengthPenalty, Seed, Temperature, TopP
from radreport.prompt import findings_from_prompt, split_prompt
from radreport.schema import text_problem

EMPTY_FINDINGS = "findings is empty or whitespace"
STRICT = ConfigDict(extra="forbid", strict=True)


class GenerationFields(BaseModel):
    """Decoding parameters a request may set; unset ones come from the model's generation_config.json.

    The JumpStart text2text names, with the meaning radreport.generation.GenerationParams gives them."""

    model_config = STRICT

    # No upper bound here: the server's own limit (serve config: max_num_beams, max_return_sequences,
    # max_new_tokens_limit) answers every value over it with one message, `must be <= N on this server`.
    num_beams: PositiveInt | None = Field(
        default=None, description="Beam width; 1: greedy (or plain sampling). At most the server's max_num_beams."
    )
    num_return_sequences: PositiveInt | None = Field(
        default=None, description="Candidates returned, best first. At most the server's max_return_sequences."
    )
    length_penalty: LengthPenalty | None = Field(
        default=None, allow_inf_nan=False, description="Scores are sum(log p) / length**this."
    )
    no_repeat_ngram_size: NonNegativeInt | None = Field(
        default=None, le=64, description="No n-gram of this size twice."
    )
    early_stopping: bool | None = Field(
        default=None, description="Beam search: stop at num_beams finished candidates (greedy/sampling stop at </s>)."
    )
    do_sample: bool | None = Field(default=None, description="Sample tokens instead of searching.")
    top_k: NonNegativeInt | None = Field(
        default=None, description="Sampling only: keep the k likeliest tokens (0: all)."
    )
    top_p: TopP | None = Field(default=None, allow_inf_nan=False, description="Sampling only: nucleus.")
    temperature: Temperature | None = Field(default=None, allow_inf_nan=False, description="Sampling only.")
    seed: Seed | None = Field(default=None, description="Sampling only: the same seed gives the same answer.")

    def generation_values(self) -> dict:
        return {k: getattr(self, k) for k in GenerationFields.model_fields}


class ImpressionRequest(GenerationFields):
    findings: str = Field(min_length=1, max_length=20000, description="The FINDINGS section of a chest X-ray report.")
    background: str | None = Field(
        default=None, max_length=5000, description="Indication/comparison, if the model uses it."
    )
    max_new_tokens: PositiveInt | None = Field(
        default=None, description="Tokens generated at most. At most the server's max_new_tokens_limit."
    )

    @field_validator("findings", "background")
    @classmethod
    def usable_text(cls, v: str | None) -> str | None:
        """Text a data file could hold (no NUL, no lone surrogate: refused there too)."""
        if v is not None and (problem := text_problem(v)):
            raise ValueError(problem)  # shown as `findings: holds a NUL character (at character 12)`
        return v

    @field_validator("findings")
    @classmethod
    def findings_present(cls, v: str) -> str:
        if not findings_from_prompt(v):  # a whole prompt sent as findings is unwrapped, as /invocations does
            raise ValueError(EMPTY_FINDINGS)
        return v

    @field_validator("background")
    @classmethod
    def background_once(cls, v: str | None, info) -> str | None:
        if v is not None and split_prompt(info.data.get("findings", ""))[1]:
            raise ValueError("given twice: here and in the prompt sent as findings")
        return v

    def prompt_parts(self) -> tuple[str, str]:
        """(findings, background): a whole prompt sent as findings is unwrapped, its background kept."""
        findings, background = split_prompt(self.findings)
        return findings, self.background or background


class Candidate(BaseModel):
    text: str
    score: float = Field(
        description="The model's log-probability of the text, up to its </s>, / length**length_penalty."
    )


class Usage(BaseModel):
    input_tokens: int
    output_tokens: int


class ImpressionResponse(BaseModel):
    impression: str
    candidates: list[Candidate]
    model: str
    usage: Usage
    truncated: bool = False


class InvocationsRequest(GenerationFields):
    """The SageMaker JumpStart text2text payload (the reference's notebook sends text_inputs, max_length,
    num_return_sequences, num_beams)."""

    text_inputs: str | list[str] = Field(description="One prompt or findings text, or a list of them (at most 64).")
    max_length: PositiveInt | None = Field(
        default=None, description="Tokens generated at most. At most the server's max_new_tokens_limit."
    )

    @field_validator("text_inputs")
    @classmethod
    def findings_in_every_input(cls, v):
        items = [v] if isinstance(v, str) else v
        if not items:
            raise ValueError("an empty list")
        if len(items) > 64:
            raise ValueError("at most 64 text_inputs per request")
        for i, text in enumerate(items):
            if problem := text_problem(text):
                raise ValueError(problem if isinstance(v, str) else f"input {i} {problem}")
            if not findings_from_prompt(text):  # a prompt that is only the instruction has no findings either
                raise ValueError(EMPTY_FINDINGS if isinstance(v, str) else f"{EMPTY_FINDINGS} (input {i})")
        return v

    def prompt_parts(self) -> list[tuple[str, str]]:
        """(findings, background) of each input: prompts unwrapped, their backgrounds kept."""
        items = [self.text_inputs] if isinstance(self.text_inputs, str) else self.text_inputs
        return [split_prompt(t) for t in items]


class InvocationsResponse(BaseModel):
    generated_texts: list[str] | list[list[str]]


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail

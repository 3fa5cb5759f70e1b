"""Request and response schemas, with bounds at the edge."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class ImpressionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    findings: str = Field(min_length=1, max_length=20000, description="The FINDINGS section of a chest X-ray report.")
    background: str | None = Field(
        default=None, max_length=5000, description="Indication/comparison, if the model uses it."
    )
    num_beams: int | None = Field(default=None, ge=1, le=64)
    max_new_tokens: int | None = Field(default=None, ge=1, le=4096)
    num_return_sequences: int | None = Field(default=None, ge=1, le=64)
    length_penalty: float | None = Field(default=None, ge=-5.0, le=5.0)

    @field_validator("findings")
    @classmethod
    def not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("findings is empty or whitespace")
        return v

    @model_validator(mode="after")
    def returns_within_beams(self):
        if self.num_return_sequences and self.num_beams and self.num_return_sequences > self.num_beams:
            raise ValueError("num_return_sequences must not exceed num_beams")
        return self


class Candidate(BaseModel):
    text: str
    score: float = Field(description="Beam-search sequence score (length-normalised log-probability).")


class Usage(BaseModel):
    input_tokens: int
    output_tokens: int


class ImpressionResponse(BaseModel):
    impression: str
    candidates: list[Candidate]
    model: str
    usage: Usage
    truncated: bool = False


class InvocationsRequest(BaseModel):
    """The SageMaker JumpStart text2text payload the reference's notebook sends."""

    text_inputs: str | list[str] = Field(description="One prompt or findings text, or a list of them.")
    max_length: int | None = Field(default=None, ge=1, le=4096)
    num_beams: int | None = Field(default=None, ge=1, le=64)
    num_return_sequences: int | None = Field(default=None, ge=1, le=64)

    @field_validator("text_inputs")
    @classmethod
    def not_blank(cls, v):
        items = [v] if isinstance(v, str) else v
        if not items or any(not isinstance(x, str) or not x.strip() for x in items):
            raise ValueError("text_inputs must be non-empty text")
        if len(items) > 64:
            raise ValueError("at most 64 text_inputs per request")
        return v


class InvocationsResponse(BaseModel):
    generated_texts: list[str] | list[list[str]]


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail

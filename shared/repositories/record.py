"""The base of the typed records repositories return: a document read back as a model.

A record's `id` is the document's `_id`; it is built from a document as read (by alias) or
by name, and fields the store holds that the model does not name are ignored, so a record
keeps reading documents a later version wrote.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class StoredRecord(BaseModel):
    """A stored document as a model: `id` is its `_id`, unknown fields are ignored."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    id: str = Field(alias="_id")

from pydantic import BaseModel


class Balance(BaseModel):
    balance: float
    available: float
    held: float
    is_active: bool

from fastapi import APIRouter

from outdial.billing import service
from outdial.billing.schemas import Balance
from outdial.error_handlers import error_responses
from outdial.keys.auth import SecretKey, Session

router = APIRouter(prefix="/billing", tags=["billing"], responses=error_responses(403))


@router.get("/balance", response_model=Balance)
async def get_balance(session: Session, principal: SecretKey) -> Balance:
    """The tenant's credit balance, what open calls hold of it, and what is available."""
    balance, held, is_active = await service.get_balance(session, tenant_id=principal.tenant_id)
    return Balance(
        balance=service.from_micros(balance),
        available=service.from_micros(balance - held),
        held=service.from_micros(held),
        is_active=is_active and balance - held > 0,
    )

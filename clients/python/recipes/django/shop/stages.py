"""The stages of the Django recipe: plain functions registered with
@stage, in an app module of their own (no Django import needed to test
them with warren_stage.testing). In a real app they use the ORM freely;
the management command (management/commands/warren_work.py) has set
Django up before importing this module."""

from warren_stage import Dead, Retry, stage


@stage("invoice")
def invoice(body, ctx):
    if "order" not in body:
        raise Dead("an invoice needs an order id")
    if body.get("busy"):
        raise Retry("the billing database is busy", after=5)
    # Order.objects.get(pk=body["order"]) ... in a real app
    return {"order": body["order"], "invoice": "INV-%s" % body["order"], "stage": ctx.stage}

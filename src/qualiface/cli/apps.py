"""The Typer applications; command modules attach their commands to these."""

import typer

app = typer.Typer(help="qualiface: quality- and uncertainty-aware face recognition.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate embeddings and scores on the standard protocols.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")
data_app = typer.Typer(help="Training and evaluation data: RecordIO packs.", no_args_is_help=True)
app.add_typer(data_app, name="data")

from build_side.cli.main import app

app()

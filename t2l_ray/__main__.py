from t2l_ray.cli import app

app()

"""A Flask application (Debian python3-flask) for test_wsgi.py."""
from flask import Flask, Response, jsonify, request

app = Flask(__name__)


class Teapot(Exception):
    pass


@app.errorhandler(Teapot)
def teapot(e):
    return jsonify(error="teapot", detail=str(e)), 418


@app.route("/hello/<name>")
def hello(name):
    return "hello %s" % name


@app.route("/json", methods=["POST"])
def echo_json():
    data = request.get_json()
    return jsonify(got=data, n=len(data))


@app.route("/form", methods=["POST"])
def form():
    f = request.files["upload"]
    content = f.read()
    return jsonify(field=request.form["field"], filename=f.filename, size=len(content),
                   head=content[:8].decode("latin-1"))


@app.route("/stream")
def stream():
    def gen():
        for i in range(5):
            yield "line %d\n" % i
    return Response(gen(), mimetype="text/plain")


@app.route("/teapot")
def brew():
    raise Teapot("short and stout")

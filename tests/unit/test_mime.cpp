#include <doctest/doctest.h>

#include <string_view>

#include "http/mime.hpp"

using netwine::http::mime_type_for;

TEST_SUITE("http.mime") {
  TEST_CASE("every type in the table") {
    struct Case {
      std::string_view path, type;
    };
    const Case cases[] = {
        {"/index.html", "text/html; charset=utf-8"},
        {"/old.htm", "text/html; charset=utf-8"},
        {"/style.css", "text/css; charset=utf-8"},
        {"/app.js", "text/javascript; charset=utf-8"},
        {"/mod.mjs", "text/javascript; charset=utf-8"},
        {"/data.json", "application/json"},
        {"/app.js.map", "application/json"},
        {"/notes.txt", "text/plain; charset=utf-8"},
        {"/logo.svg", "image/svg+xml"},
        {"/a.png", "image/png"},
        {"/a.jpg", "image/jpeg"},
        {"/a.jpeg", "image/jpeg"},
        {"/a.gif", "image/gif"},
        {"/a.webp", "image/webp"},
        {"/favicon.ico", "image/x-icon"},
        {"/m.wasm", "application/wasm"},
        {"/f.woff", "font/woff"},
        {"/f.woff2", "font/woff2"},
        {"/f.ttf", "font/ttf"},
        {"/f.otf", "font/otf"},
        {"/doc.pdf", "application/pdf"},
        {"/feed.xml", "application/xml"},
        {"/v.mp4", "video/mp4"},
        {"/v.webm", "video/webm"},
        {"/a.ogg", "audio/ogg"},
        {"/a.mp3", "audio/mpeg"},
        {"/a.wav", "audio/wav"},
        {"/netwine.d.ts", "text/plain; charset=utf-8"},
    };
    for (const auto& c : cases) {
      CAPTURE(c.path);
      CHECK(mime_type_for(c.path) == c.type);
    }
  }

  TEST_CASE("extensions compare case-insensitively") {
    CHECK(mime_type_for("/INDEX.HTML") == "text/html; charset=utf-8");
    CHECK(mime_type_for("/Photo.JPG") == "image/jpeg");
    CHECK(mime_type_for("/x.WoFf2") == "font/woff2");
    CHECK(mime_type_for("/types/Client.D.TS") == "text/plain; charset=utf-8");
  }

  TEST_CASE("unknown, missing and dotfile extensions get the default") {
    CHECK(mime_type_for("/archive.tar.gz") == "application/octet-stream");
    CHECK(mime_type_for("/video.ts") == "application/octet-stream");
    CHECK(mime_type_for("/README") == "application/octet-stream");
    CHECK(mime_type_for("/.htaccess") == "application/octet-stream");
    CHECK(mime_type_for("/.html") == "application/octet-stream");
    CHECK(mime_type_for("/d.ts") == "application/octet-stream");
    CHECK(mime_type_for("/index.html.") == "application/octet-stream");
    CHECK(mime_type_for("/dir/") == "application/octet-stream");
    CHECK(mime_type_for("") == "application/octet-stream");
    CHECK(mime_type_for("/a.htmlx") == "application/octet-stream");
  }

  TEST_CASE("only the last segment counts") {
    CHECK(mime_type_for("/v1.2/readme") == "application/octet-stream");
    CHECK(mime_type_for("/static.css/app.js") == "text/javascript; charset=utf-8");
    CHECK(mime_type_for("index.html") == "text/html; charset=utf-8");  // bare names work too
  }
}

// A web crawler (the guide's "web scraping / crawling" case) over a site that this
// example serves itself on localhost, so nothing leaves the machine.
//
//   site process  (mpx::Process running an HTTP server; its port comes back in a Value)
//   pipeline      fetch (4 workers) -> parse links (2 workers) -> dedupe (this process)
//
// The pipeline reads its URLs from an mpx::Feed: every new link the dedupe step finds
// is put back into the feed, and the feed is closed once no page is left to visit. HTTP
// is cpp-httplib (Debian's libcpp-httplib-dev) on both sides.
//
//   bazel run //examples/pipeline:crawler
//
// The site is generated from a fixed rule, so the example knows which pages are
// reachable from the start page and checks that the crawl found exactly those.
#include <chrono>
#include <cstdio>
#include <deque>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

#include "mpx/mpx.h"

namespace crawler {

constexpr int kPages = 150;

// Page n links to a few others, to pages that do not exist, and off-site. Pages are
// reachable from page 0 only through the links, not all of them are.
std::vector<std::string> links_of(int n) {
  std::vector<std::string> out;
  for (int m : {(n * 7 + 1) % kPages, (n * 3 + 2) % kPages, n % 5 == 0 ? n + 10 : -1}) {
    if (m >= 0 && m < kPages && m % 11 != 3) out.push_back("/page/" + std::to_string(m));
  }
  if (n % 9 == 0) out.push_back("/missing/" + std::to_string(n));
  if (n % 4 == 0) out.push_back("http://example.invalid/elsewhere");
  return out;
}

std::string page_html(int n) {
  std::string html = "<html><head><title>page " + std::to_string(n) + "</title></head><body>\n";
  for (const auto& link : links_of(n)) html += "<p><a href=\"" + link + "\">" + link + "</a></p>\n";
  return html + "</body></html>\n";
}

// The site's process: serves /page/<n> until stop is set; publishes its port.
void serve_site(mpx::Value<int> port, mpx::Event stop) {
  httplib::Server server;
  server.Get(R"(/page/(\d+))", [](const httplib::Request& req, httplib::Response& res) {
    const int n = std::stoi(req.matches[1]);
    if (n >= kPages) {
      res.status = 404;
      return;
    }
    res.set_content(page_html(n), "text/html");
  });
  const int bound = server.bind_to_any_port("127.0.0.1");
  if (bound <= 0) throw std::runtime_error("the site could not bind a port");
  std::thread listener([&server] { server.listen_after_bind(); });
  port.store(bound);
  stop.wait();
  server.stop();
  listener.join();
}
MPX_TASK(serve_site);

struct Page {
  std::string url;
  int status = 0;
  std::string body;
  MSGPACK_DEFINE(url, status, body);
};

struct Links {
  std::string url;
  int status = 0;
  std::vector<std::string> links;  // absolute, on the same site
  MSGPACK_DEFINE(url, status, links);
};

// "http://127.0.0.1:port" and "/path" of a URL on the site.
std::pair<std::string, std::string> split_url(const std::string& url) {
  const auto slash = url.find('/', url.find("://") + 3);
  return {url.substr(0, slash), slash == std::string::npos ? "/" : url.substr(slash)};
}

// Runs in the fetch stage's workers. A missing page is a result (status 404); a site
// that does not answer is an error, which ends the crawl.
Page fetch(std::string url) {
  const auto [site, path] = split_url(url);
  httplib::Client client(site);
  client.set_connection_timeout(5);
  auto res = client.Get(path.c_str());
  if (!res) throw std::runtime_error("GET " + url + ": " + httplib::to_string(res.error()));
  return Page{url, res->status, res->status == 200 ? res->body : std::string()};
}

// Runs in the parse stage's workers: the page's links to the same site.
Links parse_links(Page page) {
  Links out{page.url, page.status, {}};
  const std::string site = split_url(page.url).first;
  std::set<std::string> unique;
  for (std::size_t at = page.body.find("href=\""); at != std::string::npos;
       at = page.body.find("href=\"", at)) {
    at += 6;
    const std::string href = page.body.substr(at, page.body.find('"', at) - at);
    if (!href.empty() && href[0] == '/') unique.insert(site + href);
  }
  out.links.assign(unique.begin(), unique.end());
  return out;
}

MPX_TASK(fetch);
MPX_TASK(parse_links);

}  // namespace crawler

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  using namespace crawler;

  mpx::Value<int> port(0);
  mpx::Event stop;
  mpx::Process site(serve_site, port, stop);
  site.set_name("site");
  site.start();
  while (port.load() == 0) {
    if (!site.is_alive()) {
      std::fprintf(stderr, "the site process failed to start\n");
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const std::string root = "http://127.0.0.1:" + std::to_string(port.load());

  const auto t0 = std::chrono::steady_clock::now();
  mpx::Feed<std::string> frontier;
  std::set<std::string> seen{root + "/page/0"};
  frontier.put(root + "/page/0");
  int pending = 1;  // URLs put into the feed whose page has not come back yet
  int pages = 0, broken = 0;
  auto run = mpx::Pipeline::from(frontier)
                 .map(fetch, mpx::StageOptions().workers(4).batch(1))
                 .map(parse_links, 2)
                 .start();
  while (auto page = run.next()) {  // dedupe: only here, where every link is seen
    if (page->status == 200) {
      ++pages;
    } else {
      ++broken;
    }
    for (const auto& link : page->links) {
      if (seen.insert(link).second) {
        frontier.put(link);
        ++pending;
      }
    }
    if (--pending == 0) frontier.close();
  }
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - t0).count();
  const auto progress = run.progress();
  stop.set();
  site.join();

  // What a serial walk of the same link rule reaches.
  std::set<std::string> expected{"/page/0"};
  std::deque<int> todo{0};
  int expected_broken = 0;
  while (!todo.empty()) {
    const int n = todo.front();
    todo.pop_front();
    for (const auto& link : links_of(n)) {
      if (link[0] != '/' || !expected.insert(link).second) continue;
      if (link.rfind("/page/", 0) == 0) {
        todo.push_back(std::stoi(link.substr(6)));
      } else {
        ++expected_broken;
      }
    }
  }
  const int expected_pages = static_cast<int>(expected.size()) - expected_broken;

  std::printf("crawled %d pages and %d broken links from %s/page/0\n", pages, broken, root.c_str());
  std::printf("fetched %llu URLs for %zu distinct links: each once\n",
              static_cast<unsigned long long>(progress.at(0).in), seen.size());
  std::printf("serial check: %s\n",
              pages == expected_pages && broken == expected_broken ? "same pages" : "DIFFERENT");
  std::fprintf(stderr, "crawl took %lld ms; site process exitcode %d\n", static_cast<long long>(ms),
               site.exitcode().value_or(-1));
  return pages == expected_pages && broken == expected_broken ? 0 : 1;
}

// A page whose key was deleted (or signed out elsewhere) goes back to the sign-in page.
document.addEventListener("htmx:sseMessage", function (event) {
  if (event.detail && event.detail.type === "signed-out") {
    window.location.assign("/dashboard/login");
  }
});

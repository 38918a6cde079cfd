// Every page of the app, one module each; a new page is a module here (its import registers
// it with the router) and shows in the navigation when it says nav: true.
import "./home.js";
import "./topic.js";
import "./publish.js";
import "./settings.js";
import "./dashboard.js";
import "./tokens.js";
